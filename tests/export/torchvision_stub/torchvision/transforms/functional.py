def to_tensor(pic: object) -> object:
    raise NotImplementedError("torchvision stand-in: vision transforms are not available here")
