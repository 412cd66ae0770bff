from halm.cli import main

raise SystemExit(main())
