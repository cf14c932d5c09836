"""Train an mmseg / mmdet / mmaction2 model with the SN/SSN plugin, as OpenMMLab's tools/train.py
(the job is :mod:`ssn_plugins.cli.mm_train`; ``--help`` lists the options).

    python tools/mm_train.py configs/mmseg/deeplabv3/deeplabv3_r50-d8_ssn_8xb2-80k_cityscapes-512x1024.py
    torchrun --nproc-per-node 2 tools/mm_train.py CONFIG --launcher pytorch    # gloo on CPU, nccl on GPUs
"""
from ssn_plugins.cli.mm_train import main

if __name__ == "__main__":
    main()
