// OptimizationConfig for Python: every field of the C++ config as a typed
// attribute, keyword construction, validate(), to_dict()/from_dict(),
// to_json()/from_json(), equality, pickling and a readable repr.
#include <pybind11/stl.h>

#include <string>

#include "caudal/config/optimization_config.h"
#include "common.h"

namespace caudal::bindings {
namespace {

using Config = OptimizationConfig;

[[noreturn]] void TypeErr(const char* field, const char* want, py::handle got) {
  throw py::type_error(
      std::string("OptimizationConfig.") + field + " must be " + want +
      ", got " + std::string(py::str(py::type::of(got).attr("__name__"))) +
      " (" + std::string(py::repr(got)) + ")");
}

// A value the field's type cannot hold (an int past int64, a float past
// double): a ConfigurationError naming the field, at construction and on
// assignment (FromDict collects them).
struct OutOfRange {
  std::string message;
};

[[noreturn]] void RangeErr(const char* field, py::handle got) {
  std::string rule;
  for (const FieldInfo& f : ConfigFields()) {
    if (std::string(f.name) == field) rule = f.rule;
  }
  throw OutOfRange{std::string(field) + ": " + std::string(py::repr(got)) +
                   " is out of range" +
                   (rule.empty() ? "" : " (" + rule + ")")};
}

// Runs `fn`, turning OutOfRange into a ConfigurationError.
template <typename Fn>
void Checked(Fn&& fn) {
  try {
    fn();
  } catch (const OutOfRange& e) {
    ThrowStatus(absl::InvalidArgumentError(e.message));
  }
}

bool IsExactBool(py::handle v) { return PyBool_Check(v.ptr()); }
bool IsInt(py::handle v) {
  return PyLong_Check(v.ptr()) && !PyBool_Check(v.ptr());
}

void Assign(const char* f, bool& out, py::handle v) {
  if (!IsExactBool(v)) TypeErr(f, "a bool", v);
  out = v.ptr() == Py_True;
}
void Assign(const char* f, int64_t& out, py::handle v) {
  if (!IsInt(v)) TypeErr(f, "an int", v);
  int overflow = 0;
  const long long x = PyLong_AsLongLongAndOverflow(v.ptr(), &overflow);
  if (overflow) RangeErr(f, v);
  if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
  out = x;
}
void Assign(const char* f, double& out, py::handle v) {
  if (!(PyFloat_Check(v.ptr()) || IsInt(v))) TypeErr(f, "a number", v);
  const double x = PyFloat_AsDouble(v.ptr());
  if (x == -1.0 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError))
      throw py::error_already_set();
    PyErr_Clear();  // an int too large for a double
    RangeErr(f, v);
  }
  out = x;
}
void Assign(const char* f, std::optional<int64_t>& out, py::handle v) {
  if (v.is_none()) {
    out.reset();
    return;
  }
  if (!IsInt(v)) TypeErr(f, "an int or None", v);
  int64_t x = 0;
  Assign(f, x, v);
  out = x;
}

py::object Get(bool v) { return py::bool_(v); }
py::object Get(int64_t v) { return py::int_(v); }
py::object Get(double v) { return py::float_(v); }
py::object Get(const std::optional<int64_t>& v) {
  return v.has_value() ? py::object(py::int_(*v)) : py::object(py::none());
}

void SetField(Config& c, const std::string& name, py::handle v) {
#define CAUDAL_SET(kind, fname, def, doc) \
  if (name == #fname) return Assign(#fname, c.fname, v);
  CAUDAL_CONFIG_FIELDS(CAUDAL_SET)
#undef CAUDAL_SET
  throw py::type_error("OptimizationConfig has no field '" + name + "'");
}

py::dict ToDict(const Config& c) {
  py::dict d;
#define CAUDAL_GET(kind, fname, def, doc) d[#fname] = Get(c.fname);
  CAUDAL_CONFIG_FIELDS(CAUDAL_GET)
#undef CAUDAL_GET
  return d;
}

Config FromDict(py::dict d) {
  Config c;
  std::vector<std::string> problems;
  for (auto item : d) {
    const std::string key = py::str(item.first);
    // A problem is one line: an odd key is shown as its repr.
    const std::string shown = key.find_first_of("\r\n") == std::string::npos
                                  ? key
                                  : std::string(py::repr(item.first));
    try {
      SetField(c, key, item.second);
    } catch (py::type_error& e) {
      problems.push_back(
          shown + ": " +
          (std::string(e.what()).find("no field") != std::string::npos
               ? std::string("unknown field")
               : std::string(e.what())));
    } catch (const OutOfRange& e) {
      problems.push_back(e.message);
    }
  }
  if (!problems.empty()) {
    std::string msg;
    for (const auto& p : problems) msg += p + "\n";
    ThrowStatus(absl::InvalidArgumentError(msg));
  }
  return c;
}

std::string Repr(const Config& c) {
  // Only the fields that differ from the defaults, like a dataclass repr
  // that stays readable with 28 fields.
  const Config defaults;
  const py::dict now = ToDict(c);
  const py::dict def = ToDict(defaults);
  std::string out = "OptimizationConfig(";
  bool first = true;
  for (const FieldInfo& f : ConfigFields()) {
    py::object a = now[f.name], b = def[f.name];
    if (a.equal(b)) continue;
    if (!first) out += ", ";
    first = false;
    out += std::string(f.name) + "=" + std::string(py::repr(a));
  }
  return out + ")";
}

const char* KindName(FieldKind k) {
  switch (k) {
    case FieldKind::kBool:
      return "bool";
    case FieldKind::kInt:
      return "int";
    case FieldKind::kFloat:
      return "float";
    case FieldKind::kOptInt:
      return "int | None";
  }
  return "?";
}

}  // namespace

void RegisterConfig(py::module_& m) {
  auto cls = py::class_<Config>(m, "OptimizationConfig", R"doc(
Every setting of the executor (the fields of flujo's OptimizationConfig). Values,
validation and the JSON form live in the C++ core; see docs/config.md.

Construct with keywords (``OptimizationConfig(cache_max_size=1000)``),
assign attributes, call ``validate()`` for a list of problems.
)doc");
  cls.def(py::init([](py::kwargs kwargs) {
            Config c;
            Checked([&] {
              for (auto item : kwargs) {
                const std::string key = py::str(item.first);
                SetField(c, key, item.second);
              }
            });
            return c;
          }),
          "Keyword construction; unspecified fields keep their defaults.");
#define CAUDAL_PROP(kind, fname, def, doc)                  \
  cls.def_property(                                         \
      #fname, [](const Config& c) { return Get(c.fname); }, \
      [](Config& c, py::handle v) {                         \
        Checked([&] { Assign(#fname, c.fname, v); });       \
      },                                                    \
      doc);
  CAUDAL_CONFIG_FIELDS(CAUDAL_PROP)
#undef CAUDAL_PROP
  cls.def("validate", &Config::Validate,
          "Human-readable problems; an empty list when the config is valid.");
  cls.def("to_dict", &ToDict, "Every field as a plain dict.");
  cls.def_static("from_dict", &FromDict, py::arg("data"),
                 "Builds a config from a dict; unknown fields or wrong types "
                 "raise ConfigurationError naming each one.");
  cls.def("to_json", &Config::ToJson, py::arg("indent") = 2);
  cls.def_static(
      "from_json",
      [](py::handle text) {
        std::string bytes;
        if (PyBytes_Check(text.ptr())) {
          bytes.assign(PyBytes_AS_STRING(text.ptr()),
                       static_cast<size_t>(PyBytes_GET_SIZE(text.ptr())));
        } else if (PyByteArray_Check(text.ptr())) {
          bytes.assign(PyByteArray_AS_STRING(text.ptr()),
                       static_cast<size_t>(PyByteArray_GET_SIZE(text.ptr())));
        } else if (PyUnicode_Check(text.ptr())) {
          Py_ssize_t n = 0;
          const char* utf8 = PyUnicode_AsUTF8AndSize(text.ptr(), &n);
          if (utf8 == nullptr) {  // lone surrogates
            PyErr_Clear();
            ThrowStatus(absl::InvalidArgumentError(
                "$: the text is not valid Unicode (it holds a lone surrogate "
                "code point)"));
          }
          bytes.assign(utf8, static_cast<size_t>(n));
        } else {
          throw py::type_error(
              "OptimizationConfig.from_json: text must be str or bytes, got " +
              std::string(py::str(py::type::of(text).attr("__name__"))));
        }
        auto r = Config::FromJson(bytes);
        if (!r.ok()) ThrowStatus(r.status());
        return *r;
      },
      py::arg("text"),
      "Parses and validates JSON (str, or UTF-8 bytes); every problem is a "
      "ConfigurationError naming its JSON path, or its line and column.");
  cls.def("copy", [](const Config& c) { return Config(c); });
  cls.def("__copy__", [](const Config& c) { return Config(c); });
  cls.def("__deepcopy__",
          [](const Config& c, py::handle) { return Config(c); });
  cls.def("__eq__", [](const Config& a, py::handle b) -> py::object {
    if (!py::isinstance<Config>(b))
      return py::reinterpret_borrow<py::object>(Py_NotImplemented);
    return py::bool_(a == b.cast<const Config&>());
  });
  cls.attr("__hash__") = py::none();
  cls.def("__repr__", &Repr);
  cls.def(
      "_repr_html_",
      [](py::object self) {
        return py::module_::import("caudal._display").attr("config_html")(self);
      },
      "HTML table of every field, changed ones highlighted (notebooks).");
  cls.def(py::pickle([](const Config& c) { return c.ToJson(-1); },
                     [](const std::string& s) {
                       auto r = Config::FromJson(s);
                       if (!r.ok()) ThrowStatus(r.status());
                       return *r;
                     }));
  cls.def_static(
      "fields",
      []() {
        py::list out;
        for (const FieldInfo& f : ConfigFields()) {
          py::dict d;
          d["name"] = f.name;
          d["type"] = KindName(f.kind);
          d["default"] = f.default_repr;
          d["doc"] = f.doc;
          d["rule"] = f.rule;
          out.append(d);
        }
        return out;
      },
      "The field table: name, type, default, doc and validation rule of "
      "every field, in declaration order.");
}

}  // namespace caudal::bindings
