from hpccl.cli import main

raise SystemExit(main())
