// Out-of-line destructors: the key functions that pin each interface's typeinfo and vtable to
// libworkbench_core, so dynamic_cast and catch work the same in every plugin library. The errors'
// destructors are in error.cpp, which needs no LibTorch (the fuzzers in fuzz/ link it).
#include "workbench/dataset.h"
#include "workbench/encoder.h"
#include "workbench/evaluator.h"
#include "workbench/loss.h"
#include "workbench/text_embedding.h"

namespace workbench {

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
