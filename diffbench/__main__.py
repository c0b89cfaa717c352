from diffbench.cli import main

raise SystemExit(main())
