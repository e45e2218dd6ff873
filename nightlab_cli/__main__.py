import sys

from nightlab_cli.main import main

sys.exit(main())
