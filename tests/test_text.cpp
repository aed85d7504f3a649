// UTF-8 helpers, lower-casing, white space, and the character vocabulary.
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/text.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;

TEST_CASE("utf8_decode / utf8_encode round trip", "[text][utf8]") {
  const std::vector<std::string> samples = {
      "",
      "plain ascii 123",
      "école, naïve, façade, Ñandú",
      "привет, мир",
      "Καλημέρα",
      "日本語のテキスト",
      "emoji \xF0\x9F\x98\x80 and \xE2\x82\xAC",
  };
  for (const auto& s : samples) {
    INFO(s);
    CHECK(utf8_encode(utf8_decode(s)) == s);
  }
  CHECK(utf8_decode("привет").size() == 6);
  CHECK(utf8_decode("日本語").size() == 3);
  CHECK(utf8_decode("école") == std::u32string{U'é', U'c', U'o', U'l', U'e'});
}

TEST_CASE("utf8_encode writes the right bytes for each length", "[text][utf8]") {
  CHECK(utf8_encode(U'A') == "A");
  CHECK(utf8_encode(char32_t{0x7F}) == "\x7F");
  CHECK(utf8_encode(char32_t{0x80}) == "\xC2\x80");
  CHECK(utf8_encode(char32_t{0xE9}) == "\xC3\xA9");            // é
  CHECK(utf8_encode(char32_t{0x43F}) == "\xD0\xBF");           // п
  CHECK(utf8_encode(char32_t{0x7FF}) == "\xDF\xBF");
  CHECK(utf8_encode(char32_t{0x800}) == "\xE0\xA0\x80");
  CHECK(utf8_encode(char32_t{0x20AC}) == "\xE2\x82\xAC");      // €
  CHECK(utf8_encode(char32_t{0xFFFD}) == "\xEF\xBF\xBD");
  CHECK(utf8_encode(char32_t{0x10000}) == "\xF0\x90\x80\x80");
  CHECK(utf8_encode(char32_t{0x1F600}) == "\xF0\x9F\x98\x80");  // 😀
  CHECK(utf8_encode(char32_t{0x10FFFF}) == "\xF4\x8F\xBF\xBF");
}

TEST_CASE("invalid UTF-8 bytes decode to U+FFFD and decoding goes on", "[text][utf8]") {
  CHECK(utf8_decode("\xFF") == std::u32string{0xFFFD});
  CHECK(utf8_decode("a\x80" "b") == (std::u32string{U'a', 0xFFFD, U'b'}));    // stray continuation byte
  CHECK(utf8_decode("a\xC3") == (std::u32string{U'a', 0xFFFD}));              // truncated at the end
  CHECK(utf8_decode("\xC3" "a") == (std::u32string{0xFFFD, U'a'}));           // lead byte, no continuation
  auto truncated = utf8_decode("\xE2\x82" "x");  // truncated 3-byte form: replacement(s), then the x
  REQUIRE(truncated.size() >= 2);
  CHECK(truncated.front() == 0xFFFD);
  CHECK(truncated.back() == U'x');
}

TEST_CASE("to_lower handles accented Latin, Cyrillic and Greek", "[text][lower]") {
  CHECK(to_lower("ÉCOLE") == "école");
  CHECK(to_lower("ПРИВЕТ") == "привет");
  CHECK(to_lower("Привет, Мир! Ёж") == "привет, мир! ёж");
  CHECK(to_lower("ÀÇÑÖÜ ÆØÅ") == "àçñöü æøå");
  CHECK(to_lower("ΚΑΛΗΜΕΡΑ") == "καλημερα");
  CHECK(to_lower("Hello, World 123 !?") == "hello, world 123 !?");
  CHECK(to_lower("already lower") == "already lower");
  CHECK(to_lower("") == "");
  // Characters without case stay as they are.
  CHECK(to_lower("日本語 \xF0\x9F\x98\x80") == "日本語 \xF0\x9F\x98\x80");
}

TEST_CASE("normalize_space collapses and trims white space", "[text]") {
  CHECK(normalize_space("  hello \t  world\n\n") == "hello world");
  CHECK(normalize_space("a\r\nb\fc\vd") == "a b c d");
  CHECK(normalize_space("no-change") == "no-change");
  CHECK(normalize_space("") == "");
  CHECK(normalize_space(" \t\n ") == "");
  CHECK(normalize_space("при   вет  ") == "при вет");
}

TEST_CASE("split_words splits on white space runs", "[text]") {
  CHECK(split_words("the  cat\tsat\n") == std::vector<std::string>{"the", "cat", "sat"});
  CHECK(split_words("").empty());
  CHECK(split_words("   ").empty());
  CHECK(split_words("один") == std::vector<std::string>{"один"});
}

TEST_CASE("Vocabulary: ids after blank and unknown, sorted by code point", "[vocabulary]") {
  auto v = Vocabulary::from_texts({"cab", "ba", "b"});
  CHECK(Vocabulary::kBlank == 0);
  CHECK(Vocabulary::kUnknown == 1);
  REQUIRE(v.size() == 5);
  CHECK(v.symbol(0) == "<blank>");
  CHECK(v.symbol(1) == "<unk>");
  CHECK(v.symbol(2) == "a");
  CHECK(v.symbol(3) == "b");
  CHECK(v.symbol(4) == "c");
  CHECK_THROWS_AS(v.symbol(5), std::out_of_range);
  CHECK_THROWS_AS(v.symbol(-1), std::out_of_range);

  CHECK(v.encode("abc") == std::vector<std::int64_t>{2, 3, 4});
  CHECK(v.encode("") == std::vector<std::int64_t>{});
  CHECK(v.decode({2, 3, 4}) == "abc");

  auto empty = Vocabulary::from_texts({});
  CHECK(empty.size() == 2);
  CHECK(empty.encode("x") == std::vector<std::int64_t>{Vocabulary::kUnknown});
}

TEST_CASE("Vocabulary: unknown characters map to id 1, decode skips blank", "[vocabulary]") {
  auto v = Vocabulary::from_texts({"ab"});
  CHECK(v.encode("abz") == std::vector<std::int64_t>{2, 3, 1});
  CHECK(v.encode("я") == std::vector<std::int64_t>{1});  // one code point -> one id
  CHECK(v.decode({0, 2, 0, 0, 3, 0}) == "ab");
  CHECK(v.decode({2, 2}) == "aa");  // decode does not merge repeats (that is CTC decoding's job)
  CHECK(v.decode({2, 1, 3}) == "a\xEF\xBF\xBD" "b");  // unknown -> U+FFFD
  CHECK(v.decode({2, 99}) == "a\xEF\xBF\xBD");        // out of range too
  CHECK(v.decode({}) == "");
}

TEST_CASE("Vocabulary: serialize / deserialize round trip", "[vocabulary]") {
  const std::vector<std::string> texts = {"hello world", "привет мир", "tab\there", "new\nline", "ü€😀"};
  auto v = Vocabulary::from_texts(texts);
  const std::string text = v.serialize();
  CHECK(text.rfind("workbench-char-vocabulary v1\n", 0) == 0);
  auto back = Vocabulary::deserialize(text);
  REQUIRE(back.size() == v.size());
  for (std::int64_t id = 0; id < v.size(); ++id) CHECK(back.symbol(id) == v.symbol(id));
  for (const auto& t : texts) {
    INFO(t);
    CHECK(back.encode(t) == v.encode(t));
    CHECK(back.decode(back.encode(t)) == t);
  }
  CHECK(back.serialize() == text);
}

TEST_CASE("Vocabulary: deserialize refuses malformed input", "[vocabulary]") {
  CHECK_THROWS_AS(Vocabulary::deserialize(""), std::invalid_argument);
  CHECK_THROWS_AS(Vocabulary::deserialize("some other file\n97\n"), std::invalid_argument);
  CHECK_THROWS_AS(Vocabulary::deserialize("workbench-char-vocabulary v1\n97x\n"), std::invalid_argument);
  CHECK_THROWS_AS(Vocabulary::deserialize("workbench-char-vocabulary v1\nabc\n"), std::invalid_argument);
  // Only the header: an empty vocabulary.
  CHECK(Vocabulary::deserialize("workbench-char-vocabulary v1\n").size() == 2);
}

TEST_CASE("normalize_for_scoring: case, punctuation of any script and spaces, apostrophes and hyphens kept",
          "[text][scoring]") {
  CHECK(normalize_for_scoring("Hello,   World!") == "hello world");
  CHECK(normalize_for_scoring("  Don't stop -- it's peut-être.  ") == "don't stop -- it's peut-être");
  CHECK(normalize_for_scoring("Привет, Мир!") == "привет мир");
  CHECK(normalize_for_scoring("¿Qué HORA es?") == "qué hora es");
  CHECK(normalize_for_scoring("«Ça va» ÉTÉ…") == "ça va été");
  CHECK(normalize_for_scoring("") == "");
  CHECK(normalize_for_scoring("?!.") == "");
}
