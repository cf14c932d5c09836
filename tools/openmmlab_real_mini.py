"""OpenMMLab end to end on real annotated data, on CPU: mIoU (mmseg), COCO AP (mmdet) or top-1 (mmaction2)
before and after (the job is :mod:`ssn_plugins.cli.openmmlab_real_mini`; installed: ``ssn-openmmlab-real-mini``).

    python tools/openmmlab_real_mini.py seg    # DeepLabV3 R18-D8 + SSN, mmseg's IoUMetric
    python tools/openmmlab_real_mini.py det    # Mask R-CNN R50-FPN + SSN, mmdet's CocoMetric (pycocotools)
    python tools/openmmlab_real_mini.py video  # I3D ResNet3d-50 + SSN3d, 10-clip test, mmaction2's AccMetric
    python tools/openmmlab_real_mini.py seg --cfg-options train_cfg.max_iters=10
    python tools/openmmlab_real_mini.py det --ce  # with Channel Equilibrium in the backbone (ResNetCE)
"""
from ssn_plugins.cli.openmmlab_real_mini import main

if __name__ == "__main__":
    main()
