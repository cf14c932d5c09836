"""The clone's entry of :mod:`ssn_plugins.cli.analyze_selection`, installed as ``ssn-analyze-selection``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.analyze_selection import main

if __name__ == "__main__":
    sys.exit(main())
