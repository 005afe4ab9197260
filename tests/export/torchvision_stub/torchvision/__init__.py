"""What `import streaming` touches of torchvision (streaming/vision/base.py); text datasets never call it.

PyPI's torchvision wheels are CUDA builds whose operators cannot load beside the CPU torch of the
test environment, and mosaicml-streaming imports its vision module at top level.
"""
