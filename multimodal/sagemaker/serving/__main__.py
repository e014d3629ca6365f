"""``python -m multimodal.sagemaker.serving``: the inference server (see ``launcher``)."""
import sys

from multimodal.sagemaker.serving.launcher import main

sys.exit(main())
