"""One object per loaded SAM3 model: encode an image once, prompt it many times.

CONTRACT (other modules code against these names; the implementation may grow, the names stay):

    engine = Sam3Engine.load(source=None, device="auto", dtype=None)
        source: hub id or local folder; None -> $NAPARI_SAM3_MODEL or "facebook/sam3".
        Loads once per process (thread-safe, cached by source/device/dtype) via core.model.

    engine.encode(plane, preprocessing=Preprocessing(), rgb=None) -> EncodedImage
        Normalises the plane (core.images.to_model_rgb) and caches the vision features in an LRU
        keyed by content hash + model + preprocessing. A second call with the same plane is free.

    engine.segment_text(plane, concepts, *, preprocessing=..., rgb=None,
                        min_score=0.1, mask_threshold=0.5) -> Candidates
        concepts: "nucleus, mitotic cell" or ["nucleus", "mitotic cell"]; one encode, all concepts.
        Returned candidates: score >= min_score, sorted by score (desc), prompts = concept,
        kind = "text", masks at plane size.
    engine.segment_exemplars(plane, boxes_xyxy, box_labels=None, text=None, *, ...) -> Candidates
        boxes in pixel x0, y0, x1, y1; labels 1 positive / 0 negative; kind = "exemplar".
    engine.segment_points(plane, points_xy=None, point_labels=None, box_xyxy=None,
                          multimask=True, ...) -> Candidates
        Tracker head on the SAME cached backbone features; 3 candidates (multimask) with
        iou_scores (also used as scores), kind = "points" (or "box" for a box alone).
    engine.iter_text / iter_exemplars / iter_points(...) -> generator yielding core.progress.Progress
        and returning the Candidates (the plain methods call run_to_end on these).
    engine.stats -> dict of counters: "vision_encodes", "text_encodes", "detector_calls",
        "tracker_calls" (tests count model calls through these).
    engine.source, engine.device

Coordinates: the engine speaks the model's x/y (x = column). napari's (row, col) is flipped in
the napari shell (_layers.py), never here.
"""
