"""The clone's entry of :mod:`ssn_plugins.cli.detectron2_real_mini`, installed as ``ssn-detectron2-real-mini``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.detectron2_real_mini import main

if __name__ == "__main__":
    sys.exit(main())
