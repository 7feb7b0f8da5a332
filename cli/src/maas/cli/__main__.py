import sys

from maas.cli.main import main

sys.exit(main())
