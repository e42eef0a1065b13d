from linkwatch.cli import main

raise SystemExit(main())
