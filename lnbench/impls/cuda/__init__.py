"""CUDA C++ sources of the custom kernels, shipped as package data and read with
``importlib.resources`` (``layernorm_bwd.cu``: the two kernels of ``cupy.fused``)."""
