"""``python -m multimodal.sagemaker.training``: the training job (see ``job``)."""
import sys

from multimodal.sagemaker.training.job import main

sys.exit(main())
