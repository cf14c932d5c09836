"""The clone's entry of :mod:`ssn_plugins.cli.reproduce`, installed as ``ssn-reproduce``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
