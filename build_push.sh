#!/usr/bin/env bash
# Build the training and inference images (and push them to Amazon ECR with --push).
# Both Dockerfiles start with the same dependency layers, so the second build reuses the first's.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./build_push.sh [options]

Builds multimodal-training and multimodal-inference from train_container/ and inference_container/.

Options:
  --tag TAG             image tag (default: latest)
  --name-prefix NAME    image/repository name prefix (default: multimodal → multimodal-training, multimodal-inference)
  --base-image IMAGE    base image with Python 3.11 (default: $BASE_IMAGE, else python:3.11-slim)
  --wheels DIR          copy the wheels in DIR (e.g. a CPU PyTorch wheel) into the build context; pip prefers them
  --no-fetch-weights    do not download torchvision weights during the build; only weights already in
                        docker/weights/ are baked in (image_model=efficientnet_lite0 always works)
  --only training|inference
                        build just one image
  --push                push to ECR: creates the repositories if missing, logs in, pushes
  --account ID          AWS account for --push (default: from `aws sts get-caller-identity`)
  --region REGION       AWS region for --push (default: $AWS_REGION, $AWS_DEFAULT_REGION, or `aws configure get region`)
  -h, --help            this help

Examples:
  ./build_push.sh                                  # local images multimodal-training:latest, multimodal-inference:latest
  ./build_push.sh --tag v1 --push --region us-east-1
  BASE_IMAGE=my-registry/python:3.11-slim ./build_push.sh --wheels /opt/wheels
EOF
}

die() { echo "build_push.sh: $*" >&2; exit 1; }

tag=latest
prefix=multimodal
base_image=${BASE_IMAGE:-python:3.11-slim}
wheels=""
fetch_weights=true
only=""
push=false
account=""
region=""

while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --name-prefix) prefix=${2:?--name-prefix needs a value}; shift 2 ;;
    --base-image) base_image=${2:?--base-image needs a value}; shift 2 ;;
    --wheels) wheels=${2:?--wheels needs a directory}; shift 2 ;;
    --no-fetch-weights) fetch_weights=false; shift ;;
    --only) only=${2:?--only needs training or inference}; shift 2 ;;
    --push) push=true; shift ;;
    --account) account=${2:?--account needs a value}; shift 2 ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

case "$only" in
  ""|training|inference) ;;
  *) die "--only takes training or inference, not '$only'" ;;
esac

command -v docker >/dev/null 2>&1 || die "docker is not installed or not on PATH: install Docker (https://docs.docker.com/engine/install/)"
docker info >/dev/null 2>&1 || die "docker is installed but the daemon is not reachable: start it, or set DOCKER_HOST"
if [ "$push" = true ]; then
  command -v aws >/dev/null 2>&1 || die "--push needs the AWS CLI v2 on PATH (https://docs.aws.amazon.com/cli/)"
fi

cd "$(dirname "$0")"

if [ -n "$wheels" ]; then
  [ -d "$wheels" ] || die "--wheels: $wheels is not a directory"
  cp -f "$wheels"/*.whl docker/wheels/ 2>/dev/null || die "--wheels: no .whl files in $wheels"
fi

images=()
[ "$only" != inference ] && images+=(training)
[ "$only" != training ] && images+=(inference)

for kind in "${images[@]}"; do
  name="$prefix-$kind:$tag"
  dir=train_container
  [ "$kind" = inference ] && dir=inference_container
  echo "building $name from $dir/Dockerfile (base $base_image)" >&2
  started=$(date +%s)
  docker build --file "$dir/Dockerfile" --tag "$name" \
    --build-arg "BASE_IMAGE=$base_image" --build-arg "FETCH_WEIGHTS=$fetch_weights" .
  echo "built $name in $(( $(date +%s) - started )) s" >&2
done

[ "$push" = true ] || exit 0

if [ -z "$region" ]; then
  region=${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}
fi
[ -n "$region" ] || die "no AWS region: pass --region or set AWS_REGION"
if [ -z "$account" ]; then
  account=$(aws sts get-caller-identity --query Account --output text) \
    || die "could not find the AWS account: configure credentials (aws configure) or pass --account"
fi
registry="$account.dkr.ecr.$region.amazonaws.com"

aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry" \
  || die "docker login to $registry failed"

for kind in "${images[@]}"; do
  repo="$prefix-$kind"
  if ! aws ecr describe-repositories --region "$region" --repository-names "$repo" >/dev/null 2>&1; then
    echo "creating ECR repository $repo in $region" >&2
    aws ecr create-repository --region "$region" --repository-name "$repo" >/dev/null
  fi
  docker tag "$repo:$tag" "$registry/$repo:$tag"
  docker push "$registry/$repo:$tag"
  echo "pushed $registry/$repo:$tag" >&2
done
