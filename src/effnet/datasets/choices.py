"""The names datasets offers on the command line, free of heavy imports (see deploy.choices)."""

BUILTIN = ("fashion-mnist", "digits")  # datasets that need no folder
BAD_IMAGE_POLICIES = ("error", "skip")
AUGMENTATIONS = ("paper", "light", "none")  # see datasets.transforms.train_transform
SPLITS = ("train", "val", "test")
