"""`python -m mmiofilter`: the `mmiofilter` command."""

from .cli import main

raise SystemExit(main())
