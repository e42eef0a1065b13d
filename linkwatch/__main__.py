from linkwatch.commands import main

raise SystemExit(main())
