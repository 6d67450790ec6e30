"""Export: serving SavedModel, TF-Hub feature-vector / classification modules, TFLite, ONNX,
OpenVINO.

Every writer takes a Keras model (float RGB in [0, 255], normalisation inside, logits out) and
writes beside the output, then renames into place: an interrupted export leaves nothing
half-written, and an existing output is replaced only with ``overwrite=True``.

One module per job:

- ``source``: what is exported (``ExportSource``) from a Keras model + ``EvalPreprocessing`` +
  labels, a training run directory, or a variant + weights;
- ``serving``: TF Serving SavedModel whose signatures run the evaluation preprocessing;
- ``hub``: TF-Hub reusable SavedModels (feature vector, classification);
- ``tflite``: float32 / float16 / dynamic / int8; ``onnx``: through tf2onnx;
- ``openvino``: OpenVINO IR from the deploy graph, float32 / bf16 / int8 (NNCF);
- ``metadata``: ``metadata.json``; ``graph``: model views (logits head, input size);
- ``staging``: output checks and atomic directories; ``runtimes``: running the exports;
- ``dispatch``: ``export(source, fmt, output)``, one directory with the model and its metadata.

See docs/export.md.
"""

from keras_effnet.export.dispatch import (ALL_QUANTIZATIONS, FORMAT_QUANTIZATIONS, FORMATS,
                                          MODEL_FILES, export)
from keras_effnet.export.graph import backbone_model, export_view
from keras_effnet.export.hub import (export_hub_classification, export_hub_feature_vector,
                                     hub_module, import_tensorflow_hub)
from keras_effnet.export.metadata import (METADATA_FILE, build_metadata, read_metadata,
                                          write_metadata)
from keras_effnet.export.onnx import DEFAULT_OPSET, export_onnx, quantize_onnx_int8
from keras_effnet.export.openvino import (OPENVINO_QUANTIZATIONS, bf16_supported,
                                          compile_openvino, cpu_capabilities, export_openvino,
                                          openvino_predict)
from keras_effnet.export.runtimes import onnx_predict, tflite_predict, top1_agreement
from keras_effnet.export.serving import DEFAULT_TOP_K, export_saved_model, serving_module
from keras_effnet.export.source import (ExportSource, classes_in_file, default_labels,
                                        load_source, source_from_model, source_from_run,
                                        source_from_weights)
from keras_effnet.export.staging import ExportError, check_output, staged_directory
from keras_effnet.export.tflite import (NUM_REPRESENTATIVE, QUANTIZATIONS, calibration_data,
                                        export_tflite, representative_arrays)

__all__ = [
    "ALL_QUANTIZATIONS", "FORMAT_QUANTIZATIONS", "OPENVINO_QUANTIZATIONS", "bf16_supported",
    "compile_openvino", "cpu_capabilities", "export_openvino", "openvino_predict", "quantize_onnx_int8",
    "DEFAULT_OPSET", "DEFAULT_TOP_K", "FORMATS", "METADATA_FILE", "MODEL_FILES",
    "NUM_REPRESENTATIVE", "QUANTIZATIONS", "ExportError", "ExportSource", "backbone_model",
    "build_metadata", "calibration_data", "check_output", "classes_in_file", "default_labels", "export",
    "export_hub_classification", "export_hub_feature_vector", "export_onnx",
    "export_saved_model", "export_tflite", "export_view", "hub_module",
    "import_tensorflow_hub", "load_source", "onnx_predict", "read_metadata",
    "representative_arrays", "serving_module", "source_from_model", "source_from_run",
    "source_from_weights", "staged_directory", "tflite_predict", "top1_agreement",
    "write_metadata",
]
