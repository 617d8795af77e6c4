"""Data stages: Wikipedia articles -> passages -> entities -> embeddings/index -> masked long documents."""
