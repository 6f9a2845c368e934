# Sourced by the scripts that train on Flickr8k with COCO (reproduce_default.sh,
# reproduce_joint.sh), from the repository root, with their DATA_DIR argument (default
# ../shared/data, holding flickr8k, coco_train409, coco_text and coco_dev): the data paths, the
# virtual environment's bin/ and the bundled default model's decoding settings.
DATA=${1:-../shared/data}
F8K=$DATA/flickr8k COCO409=$DATA/coco_train409 TEXT=$DATA/coco_text/captions.jsonl
COCO=$DATA/coco_dev
BIN=.venv/bin
DECODING=$($BIN/python -c 'import json; print(json.dumps(json.load(open(
    "src/rnncap/assets/default/config.json"))["decoding"]))')
