// Out-of-line destructors: the key functions that pin each interface's typeinfo and vtable to
// libworkbench_core, so dynamic_cast and catch work the same in every plugin library.
#include "workbench/dataset.h"
#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/loss.h"
#include "workbench/text_embedding.h"

namespace workbench {

Error::~Error() = default;
ConfigError::~ConfigError() = default;
PluginError::~PluginError() = default;
DataError::~DataError() = default;
Interrupted::~Interrupted() = default;

Component::~Component() = default;
Encoder::~Encoder() = default;
Loss::~Loss() = default;
FramePredictor::~FramePredictor() = default;
Transcriber::~Transcriber() = default;
Translator::~Translator() = default;
UtteranceClassifier::~UtteranceClassifier() = default;
SpeechCodeProvider::~SpeechCodeProvider() = default;
TextEmbedding::~TextEmbedding() = default;
Dataset::~Dataset() = default;
Evaluator::~Evaluator() = default;

}  // namespace workbench
