"""The Gradio web UI and HTTP API: `python -m app --checkpoint DIR`.

    app/server.py              command line, loading and warming models, queue, launch
    app/page.py                the Blocks page and the public API (`translate`, ...)
    app/service.py             limits, batching, file translation
    app/language_detection.py  the source language of a text (py3langid)
    app/text.py                sentence splitting (sentencex) and re-joining
    app/experts_view.py        the routing heat map ("What the experts did")

Nothing here imports TensorFlow or seqio.
"""
