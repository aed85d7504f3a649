#include "workbench/text.h"

#include <clocale>
#include <cwctype>
#include <locale.h>
#include <stdexcept>

namespace workbench {

std::u32string utf8_decode(const std::string& text) {
  std::u32string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t i = 0, n = text.size();
  while (i < n) {
    unsigned char c = s[i];
    int extra = c < 0x80 ? 0 : (c >> 5) == 0x6 ? 1 : (c >> 4) == 0xe ? 2 : (c >> 3) == 0x1e ? 3 : -1;
    if (extra < 0) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = extra == 0 ? c : extra == 1 ? (c & 0x1f) : extra == 2 ? (c & 0x0f) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k <= extra; ++k) {
      if (i + k >= n || (s[i + k] & 0xc0) != 0x80) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += extra + 1;
  }
  return out;
}

std::size_t invalid_utf8_at(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int extra = 0;
    char32_t cp = 0, min = 0;
    if ((c >> 5) == 0x6) extra = 1, cp = c & 0x1f, min = 0x80;
    else if ((c >> 4) == 0xe) extra = 2, cp = c & 0x0f, min = 0x800;
    else if ((c >> 3) == 0x1e) extra = 3, cp = c & 0x07, min = 0x10000;
    else return i;
    if (i + static_cast<std::size_t>(extra) >= n) return i;
    for (int k = 1; k <= extra; ++k) {
      if ((s[i + k] & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += static_cast<std::size_t>(extra) + 1;
  }
  return std::string::npos;
}

std::string utf8_encode(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return out;
}

std::string utf8_encode(const std::u32string& text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : text) out += utf8_encode(cp);
  return out;
}

namespace {
// A private locale object: the process's global locale stays whatever the user has.
locale_t utf8_locale() {
  static locale_t utf8 = [] {
    locale_t l = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
    if (!l) throw std::runtime_error("the C.UTF-8 locale is not available (glibc's locales)");
    return l;
  }();
  return utf8;
}
}  // namespace

std::string normalize_for_scoring(const std::string& text) {
  const locale_t utf8 = utf8_locale();
  std::u32string cps = utf8_decode(to_lower(text));
  for (auto& cp : cps) {
    const bool keep = cp == U'\'' || cp == U'\u2019' || cp == U'-';
    if (!keep && iswpunct_l(static_cast<wint_t>(cp), utf8)) cp = U' ';
  }
  return normalize_space(utf8_encode(cps));
}

std::string to_lower(const std::string& text) {
  const locale_t utf8 = utf8_locale();
  std::u32string cps = utf8_decode(text);
  for (auto& cp : cps) cp = static_cast<char32_t>(towlower_l(static_cast<wint_t>(cp), utf8));
  return utf8_encode(cps);
}

std::string normalize_space(const std::string& text) {
  std::string out;
  bool pending = false;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      pending = !out.empty();
    } else {
      if (pending) out += ' ';
      pending = false;
      out += c;
    }
  }
  return out;
}

std::vector<std::string> split_words(const std::string& text) {
  std::vector<std::string> words;
  std::string current;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      if (!current.empty()) words.push_back(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

}  // namespace workbench
