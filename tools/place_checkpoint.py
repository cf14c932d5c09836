"""The clone's entry of :mod:`ssn_plugins.cli.place_checkpoint`, installed as ``ssn-place-checkpoint``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.place_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
