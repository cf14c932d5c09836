# The LazyConfig twin of real_mini/mask_rcnn_R_50_FPN_ssn.yaml: Mask R-CNN R50-FPN with SSN everywhere on the real
# mini set, trained from scratch for a few minutes on CPU by detectron2's lazy loop:
#   python tools/lazyconfig_train_net.py --config-file configs/detectron2/real_mini/mask_rcnn_R_50_FPN_ssn.py
# The set is read from $SSN_REAL_MINI (default datasets/real_mini; tools/build_real_mini_coco.py builds it).
from ssn_plugins.detectron2.trainer import real_mini_root, register_real_mini

from ..mask_rcnn_R_50_FPN_1x_ssn import dataloader, lr_multiplier, model, optimizer, train

_train, _val = register_real_mini(real_mini_root())   # (a config runs in every process the loop launches)

model.roi_heads.num_classes = 6
model.roi_heads.batch_size_per_image = 128
model.proposal_generator.post_nms_topk = (300, 300)
dataloader.train.dataset.names = _train
dataloader.train.mapper.augmentations[0].short_edge_length = (256, 288, 320)
dataloader.train.mapper.augmentations[0].max_size = 416
dataloader.train.mapper.instance_mask_format = "bitmask"   # the set stores RLE masks
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 2
dataloader.test.dataset.names = _val
dataloader.test.mapper.augmentations[0].short_edge_length = 288
dataloader.test.mapper.augmentations[0].max_size = 416
dataloader.test.num_workers = 2
model.roi_heads.box_predictor.test_topk_per_image = 200   # the nuclei image has 125 instances

optimizer.recipe.batch_average_iters = 6
lr_multiplier.scheduler.values = [1.0, 0.1]      # lr / 10 at iteration 50 of 60, 10 warm-up iterations
lr_multiplier.scheduler.milestones = [50, 60]
lr_multiplier.warmup_length = 10 / 60
train.max_iter = 60
train.eval_period = 0
train.init_checkpoint = ""
train.device = "cpu"
train.output_dir = "work_dirs/real_mini_mask_rcnn_ssn_lazy"
train.checkpointer.period = 100000
train.seed = 7   # a fixed seed: from-scratch runs this short differ noticeably from seed to seed
