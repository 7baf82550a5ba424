import os

# One BLAS thread for the whole suite, notebooks' kernels and CLI subprocesses included (they inherit the
# environment): the models' matmuls are small, and two threads on a shared 2-core machine made the suite
# slower (notebook 06: 282 s vs 95 s). The library itself never changes this.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    if not os.environ.get(_var):  # a user's own setting wins
        os.environ[_var] = "1"

from hypothesis import HealthCheck, settings  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]))  # numpy may already be loaded in this process

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
