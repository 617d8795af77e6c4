from memtrain.stages import main

raise SystemExit(main())
