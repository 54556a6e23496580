"""``python -m reconvene_fx``: the ``reconvene-fx`` command line."""

from reconvene_fx.cli import main

raise SystemExit(main())
