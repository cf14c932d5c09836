"""The clone's entry of :mod:`ssn_plugins.cli.pretrain_imagenet`, installed as ``ssn-pretrain-imagenet``
(``--help`` lists the options and examples)."""
import sys

from ssn_plugins.cli.pretrain_imagenet import main

if __name__ == "__main__":
    sys.exit(main())
