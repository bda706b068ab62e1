import sys

from proxylm.cli import main

sys.exit(main())
