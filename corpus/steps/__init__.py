"""The steps of a rewrite job, in the order corpus/job.py runs them. Each is a dataclass that pickles
(the Ray executor ships it to workers) and touches only files under the job directory and inputs."""
