"""The report: the reproduction's tables and figures beside the paper's numbers (paper Tables 1-2, Figures 3-4)."""
