from selfinstruct.cli import main

raise SystemExit(main())
