"""The clone's entry of :mod:`ssn_plugins.cli.eval_imagenet`, installed as ``ssn-eval-imagenet``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.eval_imagenet import main

if __name__ == "__main__":
    sys.exit(main())
