"""The clone's entry of :mod:`ssn_plugins.cli.deploy`, installed as ``ssn-deploy``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.deploy import main

if __name__ == "__main__":
    sys.exit(main())
