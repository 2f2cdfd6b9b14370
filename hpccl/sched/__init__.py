"""The scheduler layer: site files, batch-script rendering, submission and scaling sweeps.

``sites``   site files (site_configs/*.yaml + user overrides), node layout, queue choice
``render``  the batch script as a pure function of a :class:`~hpccl.sched.render.ScriptPlan`
``submit``  write the run directory, call sbatch/qsub, record the job id
``sweeps``  weak/strong scaling studies: one run per point and a manifest
``scaling`` their analysis: speedup and efficiency per point (``hpccl analyze --sweep``)
``cli``     the ``hpccl submit`` and ``hpccl sites`` commands
"""
