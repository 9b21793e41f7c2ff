"""mtmoe: multilingual machine translation on a Switch Transformer backbone, in JAX.

The library: layers, routing, the MoE layer, the encoder-decoder, decoding,
partitioning, checkpoints, the trainer and the Translator. It never imports
`app`, `eval`, gin files or gradio; gin is applied at the command line.
"""

__version__ = "0.1.0"
