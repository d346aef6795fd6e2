#include "caudal/hash/key_hasher.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace caudal {
namespace {

using ::testing::HasSubstr;

// Key of whatever `feed` adds to a fresh hasher; fails the test on misuse.
Key128 KeyOf(const std::function<void(KeyHasher&)>& feed) {
  KeyHasher h;
  feed(h);
  const Key128 key = h.Finish();
  EXPECT_TRUE(h.ok()) << h.status();
  return key;
}

// Some small values, written the way the bindings' walk would feed them.
void List12(KeyHasher& h) {
  h.BeginList(2);
  h.AddInt(1);
  h.AddInt(2);
  h.EndList();
}
void Tuple12(KeyHasher& h) {
  h.BeginTuple(2);
  h.AddInt(1);
  h.AddInt(2);
  h.EndTuple();
}
void Str12(KeyHasher& h) { h.AddString("12"); }
void Int12(KeyHasher& h) { h.AddInt(12); }
void ListOf12(KeyHasher& h) {
  h.BeginList(1);
  h.AddInt(12);
  h.EndList();
}
void ListStr1Str2(KeyHasher& h) {
  h.BeginList(2);
  h.AddString("1");
  h.AddString("2");
  h.EndList();
}

TEST(Key128Test, ToHexIsHighHalfFirst) {
  Key128 k;
  k.hi = 0x0123456789abcdefULL;
  k.lo = 0x00000000000000ffULL;
  EXPECT_EQ(k.ToHex(), "0123456789abcdef00000000000000ff");
  EXPECT_EQ(Key128{}.ToHex(), std::string(32, '0'));
}

TEST(Key128Test, EqualityAndHashing) {
  Key128 a{1, 2};
  Key128 b{1, 2};
  Key128 c{2, 1};
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  absl::flat_hash_set<Key128> set = {a, b, c};
  EXPECT_EQ(set.size(), 2u);
}

TEST(KeyHasherTest, ShapesThatConcatenateAlikeDiffer) {
  const std::vector<std::pair<const char*, std::function<void(KeyHasher&)>>>
      values = {
          {"[1, 2]", List12},
          {"(1, 2)", Tuple12},
          {"'12'", Str12},
          {"12", Int12},
          {"[12]", ListOf12},
          {"['1', '2']", ListStr1Str2},
          {"b'12'", [](KeyHasher& h) { h.AddBytes("12"); }},
          {"[[1], 2]",
           [](KeyHasher& h) {
             h.BeginList(2);
             h.BeginList(1);
             h.AddInt(1);
             h.EndList();
             h.AddInt(2);
             h.EndList();
           }},
          {"[1, [2]]",
           [](KeyHasher& h) {
             h.BeginList(2);
             h.AddInt(1);
             h.BeginList(1);
             h.AddInt(2);
             h.EndList();
             h.EndList();
           }},
          {"[1], [2] (two top-level values)",
           [](KeyHasher& h) {
             h.BeginList(1);
             h.AddInt(1);
             h.EndList();
             h.BeginList(1);
             h.AddInt(2);
             h.EndList();
           }},
          {"1, 2 (two top-level values)",
           [](KeyHasher& h) {
             h.AddInt(1);
             h.AddInt(2);
           }},
          {"['12']",
           [](KeyHasher& h) {
             h.BeginList(1);
             h.AddString("12");
             h.EndList();
           }},
          {"{1, 2}",
           [](KeyHasher& h) {
             h.BeginSet(2, false);
             h.AddInt(1);
             h.AddInt(2);
             h.EndSet();
           }},
          {"frozenset({1, 2})",
           [](KeyHasher& h) {
             h.BeginSet(2, true);
             h.AddInt(1);
             h.AddInt(2);
             h.EndSet();
           }},
          {"{1: 2}",
           [](KeyHasher& h) {
             h.BeginDict(1);
             h.AddInt(1);
             h.AddInt(2);
             h.EndDict();
           }},
          {"Point(1, 2)",
           [](KeyHasher& h) {
             h.BeginObject("mod.Point");
             h.AddInt(1);
             h.AddInt(2);
             h.EndObject();
           }},
          {"raw 1 '12'", [](KeyHasher& h) { h.AddRaw(1, "12"); }},
          {"raw 2 '12'", [](KeyHasher& h) { h.AddRaw(2, "12"); }},
          {"[]",
           [](KeyHasher& h) {
             h.BeginList(0);
             h.EndList();
           }},
          {"()",
           [](KeyHasher& h) {
             h.BeginTuple(0);
             h.EndTuple();
           }},
          {"{}",
           [](KeyHasher& h) {
             h.BeginDict(0);
             h.EndDict();
           }},
          {"set()",
           [](KeyHasher& h) {
             h.BeginSet(0, false);
             h.EndSet();
           }},
          {"frozenset()",
           [](KeyHasher& h) {
             h.BeginSet(0, true);
             h.EndSet();
           }},
          {"''", [](KeyHasher& h) { h.AddString(""); }},
          {"b''", [](KeyHasher& h) { h.AddBytes(""); }},
          {"None", [](KeyHasher& h) { h.AddNone(); }},
          {"nothing", [](KeyHasher& h) {}},
      };
  absl::flat_hash_map<Key128, const char*> seen;
  for (const auto& [name, feed] : values) {
    const Key128 key = KeyOf(feed);
    auto [it, inserted] = seen.emplace(key, name);
    EXPECT_TRUE(inserted) << name << " collides with " << it->second;
  }
}

TEST(KeyHasherTest, NumericsAreTypeSensitive) {
  const Key128 one_int = KeyOf([](KeyHasher& h) { h.AddInt(1); });
  const Key128 one_float = KeyOf([](KeyHasher& h) { h.AddFloat(1.0); });
  const Key128 true_bool = KeyOf([](KeyHasher& h) { h.AddBool(true); });
  const Key128 zero_int = KeyOf([](KeyHasher& h) { h.AddInt(0); });
  const Key128 false_bool = KeyOf([](KeyHasher& h) { h.AddBool(false); });
  const Key128 none = KeyOf([](KeyHasher& h) { h.AddNone(); });
  EXPECT_NE(one_int, one_float);
  EXPECT_NE(one_int, true_bool);
  EXPECT_NE(one_float, true_bool);
  EXPECT_NE(zero_int, false_bool);
  EXPECT_NE(false_bool, none);
  EXPECT_NE(true_bool, false_bool);
}

TEST(KeyHasherTest, SignedZerosAreEqual) {
  EXPECT_EQ(KeyOf([](KeyHasher& h) { h.AddFloat(0.0); }),
            KeyOf([](KeyHasher& h) { h.AddFloat(-0.0); }));
  EXPECT_NE(KeyOf([](KeyHasher& h) { h.AddFloat(0.0); }),
            KeyOf([](KeyHasher& h) { h.AddFloat(5e-324); }));
}

TEST(KeyHasherTest, AllNansAreEqual) {
  auto from_bits = [](uint64_t bits) {
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  };
  const double nans[] = {
      std::numeric_limits<double>::quiet_NaN(),
      -std::numeric_limits<double>::quiet_NaN(),
      std::numeric_limits<double>::signaling_NaN(),
      from_bits(0x7ff0000000000001ULL),
      from_bits(0xfff8dead0000beefULL),
      std::nan("123"),
  };
  const Key128 reference = KeyOf([&](KeyHasher& h) { h.AddFloat(nans[0]); });
  for (double nan : nans) {
    ASSERT_TRUE(std::isnan(nan));
    EXPECT_EQ(KeyOf([&](KeyHasher& h) { h.AddFloat(nan); }), reference);
  }
  EXPECT_NE(reference, KeyOf([](KeyHasher& h) {
              h.AddFloat(std::numeric_limits<double>::infinity());
            }));
  EXPECT_NE(KeyOf([](KeyHasher& h) {
              h.AddFloat(std::numeric_limits<double>::infinity());
            }),
            KeyOf([](KeyHasher& h) {
              h.AddFloat(-std::numeric_limits<double>::infinity());
            }));
}

TEST(KeyHasherTest, BigIntThatFitsHashesLikeInt) {
  auto big = [](std::string magnitude, bool negative) {
    return KeyOf([&](KeyHasher& h) { h.AddBigInt(magnitude, negative); });
  };
  auto small = [](int64_t v) {
    return KeyOf([&](KeyHasher& h) { h.AddInt(v); });
  };
  EXPECT_EQ(big(std::string("\x05", 1), false), small(5));
  EXPECT_EQ(big(std::string("\x05\0\0\0\0\0\0\0\0\0\0", 11), false), small(5));
  EXPECT_EQ(big(std::string("\x05", 1), true), small(-5));
  EXPECT_EQ(big("", false), small(0));
  EXPECT_EQ(big("", true), small(0));  // -0 is 0
  EXPECT_EQ(big(std::string("\0\0", 2), true), small(0));
  EXPECT_EQ(big(std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8), false),
            small(std::numeric_limits<int64_t>::max()));
  EXPECT_EQ(big(std::string("\0\0\0\0\0\0\0\x80", 8), true),
            small(std::numeric_limits<int64_t>::min()));
}

TEST(KeyHasherTest, BigIntBeyondInt64) {
  const std::string two_pow_63("\0\0\0\0\0\0\0\x80", 8);
  const std::string two_pow_64("\0\0\0\0\0\0\0\0\x01", 9);
  const Key128 pos63 = KeyOf([&](KeyHasher& h) { h.AddBigInt(two_pow_63, 0); });
  const Key128 neg63 = KeyOf([&](KeyHasher& h) { h.AddBigInt(two_pow_63, 1); });
  const Key128 pos64 = KeyOf([&](KeyHasher& h) { h.AddBigInt(two_pow_64, 0); });
  const Key128 neg64 = KeyOf([&](KeyHasher& h) { h.AddBigInt(two_pow_64, 1); });
  const Key128 padded = KeyOf([&](KeyHasher& h) {
    h.AddBigInt(two_pow_64 + std::string(5, '\0'), false);
  });
  EXPECT_EQ(pos64, padded);
  absl::flat_hash_set<Key128> all = {
      pos63,
      neg63,
      pos64,
      neg64,
      KeyOf([](KeyHasher& h) { h.AddInt(0); }),
      KeyOf([](KeyHasher& h) {
        h.AddBytes(std::string("\0\0\0\0\0\0\0\x80", 8));
      }),
  };
  EXPECT_EQ(all.size(), 6u);
  // A huge integer (digested) is stable and differs from its neighbour.
  std::string huge(10000, '\x5a');
  std::string huge2 = huge;
  huge2[0] = '\x5b';
  EXPECT_EQ(KeyOf([&](KeyHasher& h) { h.AddBigInt(huge, false); }),
            KeyOf([&](KeyHasher& h) { h.AddBigInt(huge, false); }));
  EXPECT_NE(KeyOf([&](KeyHasher& h) { h.AddBigInt(huge, false); }),
            KeyOf([&](KeyHasher& h) { h.AddBigInt(huge2, false); }));
  EXPECT_NE(KeyOf([&](KeyHasher& h) { h.AddBigInt(huge, false); }),
            KeyOf([&](KeyHasher& h) { h.AddBigInt(huge, true); }));
}

// {k0: v0, k1: v1, ...} fed in the given order.
Key128 DictKey(const std::vector<std::pair<std::string, int64_t>>& items) {
  return KeyOf([&](KeyHasher& h) {
    h.BeginDict(items.size());
    for (const auto& [k, v] : items) {
      h.AddString(k);
      h.AddInt(v);
    }
    h.EndDict();
  });
}

TEST(KeyHasherTest, DictIgnoresInsertionOrder) {
  std::vector<std::pair<std::string, int64_t>> items = {
      {"alpha", 1}, {"beta", 2}, {"gamma", 3}, {"delta", 4}, {"eps", 5}};
  const Key128 reference = DictKey(items);
  std::sort(items.begin(), items.end());
  int permutations = 0;
  do {
    EXPECT_EQ(DictKey(items), reference);
    ++permutations;
  } while (std::next_permutation(items.begin(), items.end()));
  EXPECT_EQ(permutations, 120);
}

TEST(KeyHasherTest, DictPairsKeysWithTheirValues) {
  EXPECT_NE(DictKey({{"a", 1}, {"b", 2}}), DictKey({{"a", 2}, {"b", 1}}));
  EXPECT_NE(DictKey({{"a", 1}}), DictKey({{"a", 1}, {"b", 2}}));
  EXPECT_NE(DictKey({{"a", 1}}), DictKey({{"b", 1}}));
  EXPECT_NE(DictKey({{"a", 1}}), DictKey({}));
  // Element boundary: {"a": "bc"} vs {"ab": "c"}.
  EXPECT_NE(KeyOf([](KeyHasher& h) {
              h.BeginDict(1);
              h.AddString("a");
              h.AddString("bc");
              h.EndDict();
            }),
            KeyOf([](KeyHasher& h) {
              h.BeginDict(1);
              h.AddString("ab");
              h.AddString("c");
              h.EndDict();
            }));
  // A dict is not the set of its keys and values, nor its list of items.
  const Key128 dict = KeyOf([](KeyHasher& h) {
    h.BeginDict(1);
    h.AddInt(1);
    h.AddInt(2);
    h.EndDict();
  });
  const Key128 set = KeyOf([](KeyHasher& h) {
    h.BeginSet(2, false);
    h.AddInt(1);
    h.AddInt(2);
    h.EndSet();
  });
  const Key128 set_of_pair = KeyOf([](KeyHasher& h) {
    h.BeginSet(1, false);
    h.BeginTuple(2);
    h.AddInt(1);
    h.AddInt(2);
    h.EndTuple();
    h.EndSet();
  });
  EXPECT_NE(dict, set);
  EXPECT_NE(dict, set_of_pair);
}

Key128 SetKey(const std::vector<int64_t>& elements, bool frozen = false) {
  return KeyOf([&](KeyHasher& h) {
    h.BeginSet(elements.size(), frozen);
    for (int64_t e : elements) h.AddInt(e);
    h.EndSet();
  });
}

TEST(KeyHasherTest, SetIgnoresOrder) {
  EXPECT_EQ(SetKey({1, 2, 3}), SetKey({3, 1, 2}));
  EXPECT_EQ(SetKey({1, 2, 3}, true), SetKey({2, 3, 1}, true));
  EXPECT_NE(SetKey({1, 2, 3}), SetKey({2, 3, 1}, true));
  EXPECT_NE(SetKey({1, 2, 3}), SetKey({1, 2, 4}));
  EXPECT_NE(SetKey({1, 2}), SetKey({1, 2, 3}));
}

TEST(KeyHasherTest, RepeatedElementsDoNotCancel) {
  // Python sets never repeat an element, but the combination must not rely
  // on it: a multiset fed twice differs from once and from empty.
  const Key128 empty = SetKey({});
  const Key128 once = SetKey({7});
  const Key128 twice = SetKey({7, 7});
  const Key128 thrice = SetKey({7, 7, 7});
  absl::flat_hash_set<Key128> all = {empty,  once,           twice,
                                     thrice, SetKey({7, 8}), SetKey({8, 8})};
  EXPECT_EQ(all.size(), 6u);
}

TEST(KeyHasherTest, NestedContainersAreOrderInsensitiveAtEveryLevel) {
  // {frozenset({1, 2}): [{"x": (1, None)}, {3, 4}], "k": {"a": 1, "b": 2}}
  auto feed = [](bool swap_outer, bool swap_inner) {
    return KeyOf([&](KeyHasher& h) {
      auto first_item = [&] {
        h.BeginSet(2, true);
        if (swap_inner) {
          h.AddInt(2);
          h.AddInt(1);
        } else {
          h.AddInt(1);
          h.AddInt(2);
        }
        h.EndSet();
        h.BeginList(2);
        h.BeginDict(1);
        h.AddString("x");
        h.BeginTuple(2);
        h.AddInt(1);
        h.AddNone();
        h.EndTuple();
        h.EndDict();
        h.BeginSet(2, false);
        h.AddInt(swap_inner ? 4 : 3);
        h.AddInt(swap_inner ? 3 : 4);
        h.EndSet();
        h.EndList();
      };
      auto second_item = [&] {
        h.AddString("k");
        h.BeginDict(2);
        if (swap_inner) {
          h.AddString("b");
          h.AddInt(2);
          h.AddString("a");
          h.AddInt(1);
        } else {
          h.AddString("a");
          h.AddInt(1);
          h.AddString("b");
          h.AddInt(2);
        }
        h.EndDict();
      };
      h.BeginDict(2);
      if (swap_outer) {
        second_item();
        first_item();
      } else {
        first_item();
        second_item();
      }
      h.EndDict();
    });
  };
  const Key128 reference = feed(false, false);
  EXPECT_EQ(feed(true, false), reference);
  EXPECT_EQ(feed(false, true), reference);
  EXPECT_EQ(feed(true, true), reference);

  // Moving an element between nested sets changes the key.
  EXPECT_NE(KeyOf([](KeyHasher& h) {
              h.BeginSet(2, true);
              h.BeginSet(1, true);
              h.AddInt(1);
              h.EndSet();
              h.BeginSet(1, true);
              h.AddInt(2);
              h.EndSet();
              h.EndSet();
            }),
            KeyOf([](KeyHasher& h) {
              h.BeginSet(2, true);
              h.BeginSet(2, true);
              h.AddInt(1);
              h.AddInt(2);
              h.EndSet();
              h.BeginSet(0, true);
              h.EndSet();
              h.EndSet();
            }));
}

TEST(KeyHasherTest, DeepNestingBeyondInlineFrames) {
  auto nested = [](int depth, int64_t leaf) {
    return KeyOf([&](KeyHasher& h) {
      for (int i = 0; i < depth; ++i) {
        if (i % 3 == 0) {
          h.BeginList(1);
        } else if (i % 3 == 1) {
          h.BeginSet(1, true);
        } else {
          h.BeginDict(1);
          h.AddInt(i);
        }
      }
      h.AddInt(leaf);
      for (int i = depth - 1; i >= 0; --i) {
        if (i % 3 == 0) {
          h.EndList();
        } else if (i % 3 == 1) {
          h.EndSet();
        } else {
          h.EndDict();
        }
      }
    });
  };
  EXPECT_EQ(nested(200, 1), nested(200, 1));
  EXPECT_NE(nested(200, 1), nested(200, 2));
  EXPECT_NE(nested(200, 1), nested(199, 1));
}

TEST(KeyHasherTest, LargePayloadsAreDigestedConsistently) {
  const size_t n = KeyHasher::kLargePayload;
  std::string big(3 * n, 'q');
  std::string big2 = big;
  big2[2 * n] = 'r';
  auto str = [](const std::string& s) {
    return KeyOf([&](KeyHasher& h) { h.AddString(s); });
  };
  auto bytes = [](const std::string& s) {
    return KeyOf([&](KeyHasher& h) { h.AddBytes(s); });
  };
  EXPECT_EQ(str(big), str(std::string(3 * n, 'q')));
  EXPECT_NE(str(big), str(big2));
  EXPECT_NE(str(big), bytes(big));
  // Around the threshold, where the encoding switches.
  EXPECT_NE(str(std::string(n, 'q')), str(std::string(n + 1, 'q')));
  EXPECT_NE(str(std::string(n + 1, 'q')), str(std::string(n + 2, 'q')));
  EXPECT_NE(KeyOf([&](KeyHasher& h) { h.AddRaw(3, big); }),
            KeyOf([&](KeyHasher& h) { h.AddRaw(4, big); }));
  // Inside an unordered container too.
  EXPECT_EQ(KeyOf([&](KeyHasher& h) {
              h.BeginSet(2, false);
              h.AddString(big);
              h.AddString(big2);
              h.EndSet();
            }),
            KeyOf([&](KeyHasher& h) {
              h.BeginSet(2, false);
              h.AddString(big2);
              h.AddString(big);
              h.EndSet();
            }));
}

// A long str as its code units (what the walk does for non-ASCII text):
// equal units give equal keys; the unit size, the count and every unit
// matter; and the token equals no UTF-8 str, bytes or raw token, even over
// the very same bytes.
TEST(KeyHasherTest, StringUnitsAreATypeOfTheirOwn) {
  const size_t n = KeyHasher::kLargePayload;
  std::vector<uint16_t> ucs2(n, 0x20ac);  // 8 KiB of euro signs
  std::vector<uint16_t> ucs2b = ucs2;
  ucs2b[n / 2] = 0x20ad;
  auto units = [](int size, const void* p, size_t count) {
    return KeyOf([&](KeyHasher& h) { h.AddStringUnits(size, p, count); });
  };
  const Key128 k = units(2, ucs2.data(), n);
  EXPECT_EQ(k, units(2, std::vector<uint16_t>(n, 0x20ac).data(), n));
  EXPECT_NE(k, units(2, ucs2b.data(), n));
  EXPECT_NE(k, units(2, ucs2.data(), n - 1));
  // The same bytes read as Latin-1 or UCS-4 units: different strings.
  EXPECT_NE(k, units(1, ucs2.data(), 2 * n));
  EXPECT_NE(k, units(4, ucs2.data(), n / 2));
  const std::string raw(reinterpret_cast<const char*>(ucs2.data()), 2 * n);
  EXPECT_NE(k, KeyOf([&](KeyHasher& h) { h.AddString(raw); }));
  EXPECT_NE(k, KeyOf([&](KeyHasher& h) { h.AddBytes(raw); }));
  for (uint8_t kind = 0; kind < 8; ++kind)
    EXPECT_NE(k, KeyOf([&](KeyHasher& h) { h.AddRaw(kind, raw); }));
  // Stable: the digest is part of the key format (little-endian units).
  EXPECT_EQ(k.ToHex(), units(2, ucs2.data(), n).ToHex());
  // A bad unit size is misuse, reported, not a crash.
  KeyHasher h;
  h.AddStringUnits(3, ucs2.data(), 10);
  EXPECT_FALSE(h.ok());
  EXPECT_THAT(h.status().message(), HasSubstr("unit size 3"));
}

TEST(KeyHasherTest, ObjectsAreKeyedByTypeNameAndFields) {
  auto obj = [](absl::string_view type, int64_t x) {
    return KeyOf([&](KeyHasher& h) {
      h.BeginObject(type);
      h.AddString("x");
      h.AddInt(x);
      h.EndObject();
    });
  };
  EXPECT_EQ(obj("app.A", 1), obj("app.A", 1));
  EXPECT_NE(obj("app.A", 1), obj("app.B", 1));
  EXPECT_NE(obj("app.A", 1), obj("app.A", 2));
  EXPECT_NE(obj("app.A", 1), KeyOf([](KeyHasher& h) {
              h.BeginTuple(2);
              h.AddString("x");
              h.AddInt(1);
              h.EndTuple();
            }));
  // A long type name is digested, still distinct.
  EXPECT_NE(obj(std::string(5000, 'T'), 1), obj(std::string(5001, 'T'), 1));
}

// A list of `n` strings of `len` bytes, the last one `last`.
void StringList(KeyHasher& h, size_t n, size_t len, char last) {
  h.BeginList(n);
  for (size_t i = 0; i + 1 < n; ++i) h.AddString(std::string(len, 'a'));
  h.AddString(std::string(len, last));
  h.EndList();
}

TEST(KeyHasherTest, LargeOrderedContainersAreSummarisedConsistently) {
  // 40 strings of 30 bytes: about 1.4 KB, above kCollapseAbove.
  auto big = [](char last) {
    return KeyOf([&](KeyHasher& h) { StringList(h, 40, 30, last); });
  };
  EXPECT_EQ(big('a'), big('a'));
  EXPECT_NE(big('a'), big('b'));
  // Around the threshold, where the encoding switches: a list of one str of
  // len bytes is 1 + 5 + len + 1 bytes.
  const size_t at = KeyHasher::kCollapseAbove - 7;
  auto one = [](size_t len) {
    return KeyOf([&](KeyHasher& h) { StringList(h, 1, len, 'z'); });
  };
  EXPECT_NE(one(at), one(at + 1));
  EXPECT_NE(one(at + 1), one(at + 2));
  // A summarised container is never confused with its bytes as a payload,
  // and stays order-insensitive inside a set.
  EXPECT_NE(KeyOf([](KeyHasher& h) {
              h.BeginTuple(1);
              StringList(h, 40, 30, 'a');
              h.EndTuple();
            }),
            KeyOf([](KeyHasher& h) {
              h.BeginList(1);
              StringList(h, 40, 30, 'a');
              h.EndList();
            }));
  EXPECT_EQ(KeyOf([](KeyHasher& h) {
              h.BeginSet(2, false);
              StringList(h, 40, 30, 'a');
              StringList(h, 40, 30, 'b');
              h.EndSet();
            }),
            KeyOf([](KeyHasher& h) {
              h.BeginSet(2, false);
              StringList(h, 40, 30, 'b');
              StringList(h, 40, 30, 'a');
              h.EndSet();
            }));
  // Objects are summarised too, and their type still matters.
  auto obj = [](absl::string_view type) {
    return KeyOf([&](KeyHasher& h) {
      h.BeginObject(type);
      StringList(h, 40, 30, 'a');
      h.EndObject();
    });
  };
  EXPECT_NE(obj("app.A"), obj("app.B"));
  EXPECT_EQ(obj("app.A"), obj("app.A"));
}

// Feeds `sub` twice into a list, the second time by replaying the first.
Key128 ReplayedTwice(const std::function<void(KeyHasher&)>& outer_begin,
                     const std::function<void(KeyHasher&)>& outer_end,
                     const std::function<void(KeyHasher&)>& sub) {
  KeyHasher h;
  outer_begin(h);
  const size_t mark = h.Mark();
  sub(h);
  const std::string enc(h.Since(mark));
  h.AddReplay(enc);
  outer_end(h);
  const Key128 key = h.Finish();
  EXPECT_TRUE(h.ok()) << h.status();
  return key;
}

TEST(KeyHasherTest, ReplayingAValueEqualsAddingItAgain) {
  const std::vector<std::function<void(KeyHasher&)>> subs = {
      [](KeyHasher& h) { h.AddInt(7); },
      [](KeyHasher& h) { h.AddString(std::string(5000, 's')); },
      List12,
      [](KeyHasher& h) { StringList(h, 40, 30, 'a'); },
      [](KeyHasher& h) {
        h.BeginDict(2);
        h.AddString("a");
        List12(h);
        h.AddString("b");
        StringList(h, 40, 30, 'a');
        h.EndDict();
      },
      [](KeyHasher& h) {
        h.BeginObject("app.A");
        h.BeginSet(1, true);
        h.AddInt(1);
        h.EndSet();
        h.EndObject();
      },
  };
  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE(i);
    const auto& sub = subs[i];
    // In an ordered container.
    EXPECT_EQ(ReplayedTwice([](KeyHasher& h) { h.BeginList(2); },
                            [](KeyHasher& h) { h.EndList(); }, sub),
              KeyOf([&](KeyHasher& h) {
                h.BeginList(2);
                sub(h);
                sub(h);
                h.EndList();
              }));
    // As a dict key and value (an unordered container).
    EXPECT_EQ(ReplayedTwice([](KeyHasher& h) { h.BeginDict(1); },
                            [](KeyHasher& h) { h.EndDict(); }, sub),
              KeyOf([&](KeyHasher& h) {
                h.BeginDict(1);
                sub(h);
                sub(h);
                h.EndDict();
              }));
    // At the top level.
    EXPECT_EQ(ReplayedTwice([](KeyHasher&) {}, [](KeyHasher&) {}, sub),
              KeyOf([&](KeyHasher& h) {
                sub(h);
                sub(h);
              }));
  }
}

TEST(KeyHasherTest, GoldenKeysAreStable) {
  // These values are part of the key format: keys are shared between
  // processes and machines (Redis). If this test fails, the format changed;
  // change kRootSeed in key_hasher.cc and update the goldens deliberately.
  EXPECT_EQ(KeyOf([](KeyHasher& h) {}).ToHex(),
            "9d934f45a0714711519b7d86437a196f");
  EXPECT_EQ(KeyOf([](KeyHasher& h) { h.AddInt(1); }).ToHex(),
            "aa0b77088dac8117ffd06b1a69ff567f");
  EXPECT_EQ(KeyOf(ListStr1Str2).ToHex(), "20dd4914a7cc54979585c92dfccd1d43");
  EXPECT_EQ(DictKey({{"a", 1}, {"b", 2}}).ToHex(),
            "c2aec5a19ad648be959a1abd3612443a");
  EXPECT_EQ(KeyOf([](KeyHasher& h) {
              h.AddString("step.name");
              h.BeginTuple(3);
              h.AddFloat(2.5);
              h.AddBool(true);
              h.AddNone();
              h.EndTuple();
              h.BeginSet(2, true);
              h.AddBytes("xy");
              h.AddBigInt(std::string("\0\0\0\0\0\0\0\0\x01", 9), true);
              h.EndSet();
              h.BeginObject("app.models.User");
              h.AddString("id");
              h.AddInt(42);
              h.EndObject();
              h.AddRaw(9, "2024-01-01");
            }).ToHex(),
            "c59e9d7b058f45ffd5e77107be583dbb");
  // A summarised (large) list.
  EXPECT_EQ(KeyOf([](KeyHasher& h) { StringList(h, 40, 30, 'a'); }).ToHex(),
            "e5a64e03d096cb7633961efcb4d8d123");
}

TEST(KeyHasherTest, FinishIsRepeatableAndResetStartsOver) {
  KeyHasher h;
  List12(h);
  const Key128 first = h.Finish();
  EXPECT_EQ(h.Finish(), first);
  // Tokens may follow a Finish.
  h.AddInt(3);
  EXPECT_NE(h.Finish(), first);

  h.Reset();
  List12(h);
  EXPECT_EQ(h.Finish(), first);

  // Grow well beyond the inline buffer, then reuse.
  h.Reset();
  h.BeginList(1000);
  for (int i = 0; i < 1000; ++i) h.AddString("a string of some length");
  h.EndList();
  const Key128 long_key = h.Finish();
  h.Reset();
  List12(h);
  EXPECT_EQ(h.Finish(), first);
  h.Reset();
  h.BeginList(1000);
  for (int i = 0; i < 1000; ++i) h.AddString("a string of some length");
  h.EndList();
  EXPECT_EQ(h.Finish(), long_key);
  EXPECT_TRUE(h.ok());
}

TEST(KeyHasherTest, MisuseIsReportedNotFatal) {
  {
    KeyHasher h;
    h.EndList();
    h.Finish();
    EXPECT_FALSE(h.ok());
    EXPECT_THAT(std::string(h.status().message()),
                HasSubstr("EndList without"));
    h.Reset();
    EXPECT_TRUE(h.ok());
  }
  {
    KeyHasher h;
    h.BeginList(3);
    h.AddInt(1);
    h.EndList();
    EXPECT_THAT(std::string(h.status().message()),
                HasSubstr("declared 3 elements but got 1"));
  }
  {
    KeyHasher h;
    h.BeginDict(1);
    h.AddInt(1);
    h.EndDict();
    EXPECT_THAT(std::string(h.status().message()),
                HasSubstr("key with no value"));
    EXPECT_EQ(h.depth(), 0u);
  }
  {
    KeyHasher h;
    h.BeginTuple(1);
    h.EndList();
    EXPECT_FALSE(h.ok());
    EXPECT_EQ(h.depth(), 1u);
  }
  {
    KeyHasher h;
    h.BeginSet(1, false);
    h.BeginDict(0);
    h.Finish();
    EXPECT_THAT(std::string(h.status().message()),
                HasSubstr("2 unclosed containers"));
  }
  {
    KeyHasher h;
    h.BeginSet(0, true);
    h.EndDict();
    EXPECT_FALSE(h.ok());
  }
}

}  // namespace
}  // namespace caudal
