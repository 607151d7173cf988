"""What the model computes: jagged operators, embeddings, UserArch/DLRM ranking, two-tower
retrieval, HSTU with target-aware masking — each in an impression-level and a ROO layout that
compute the same losses and gradients — plus the analytic cost model (cost.py) and Triton kernels
(kernels/, GPU)."""
