from .story import main

raise SystemExit(main())
