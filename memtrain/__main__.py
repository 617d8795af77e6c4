from memtrain.cli import main

raise SystemExit(main())
