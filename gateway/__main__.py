"""`python -m gateway` is `mce`."""

import sys

from gateway.cli import main

sys.exit(main())
