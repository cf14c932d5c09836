"""Evaluate a trained mmseg / mmdet / mmaction2 checkpoint with the SN/SSN plugin (the job is
:mod:`ssn_plugins.cli.mm_test`; ``--help`` lists the options).

    python tools/mm_test.py CONFIG work_dirs/x/iter_80000.pth
    python tools/mm_test.py CONFIG CHECKPOINT --tta              # mmseg's multi-scale + flip test
"""
from ssn_plugins.cli.mm_test import main

if __name__ == "__main__":
    main()
