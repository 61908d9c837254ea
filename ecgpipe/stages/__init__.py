"""The pipeline's stages, one module each, in the order they run::

    segments       one unit per record   read + validate WFDB, resample, cut windows, rhythm block -> records/<db>/<rec>.zip
    table          one unit per run      stable per-class selection, stable rows                  -> segments/*
    spectrograms   one unit per chunk    STFT log power of chunk_size segments                    -> spectrograms/<hash>
    features       one unit per chunk    images, ImageNet normalisation, backbone, pooled         -> features/<hash>
    classify       one unit per row      every protocol's folds for one (extractor, classifier)   -> markers, report
    recording_grid    one unit per record ([recordings] score = true): every window of a recording on predict's
                      grid, featurised                                                        -> recordings/<hash>/<db>/<rec>.zip
    recording_scores  one unit per grouped outer fold: its endpoint detectors, its test patients' recordings called
                      as predict calls them                                                   -> markers, report

Each module owns its unit of work: the function that computes one unit (pure maths below it, store reads and writes
through ``ecgpipe.store``), the function that computes the unit's content key, and the names of the arrays it writes.
Its code version covers its own module and every ``ecgpipe`` module it imports (``ecgpipe.keys.code_version``), so
an upstream module never imports a downstream one. Orchestration (Prefect tasks, Dask placement, markers) is in
``ecgpipe.orchestration`` and ``flows/``; it only wires these functions.
"""
