"""Models that run without PyTorch: ``attnmt export MODEL --onnx DIR`` writes the encoder and one
decoder step as ONNX graphs (graphs.py, needs torch), and onnx_model.py translates with them through
onnxruntime and the same search code, torch never imported (``pip install 'attnmt[onnx]'``)."""
