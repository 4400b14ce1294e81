"""Qt-free core: model access, engine, candidates, images, tiling and counting.

Nothing in this package imports Qt or napari; torch and transformers are imported lazily.
"""
