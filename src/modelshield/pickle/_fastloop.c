/*
 * Optional accelerator for the symbolic pickle machine's tight loop (modelshield.pickle.machine).
 *
 * run() executes a run of plain-data opcodes (strings with the memo put that follows, memo
 * put/get, ints, floats, None/bools, MARK, TUPLE1-3, empty containers, short str/bytes) on the
 * machine's stack and memo, with exactly the semantics of the pure-Python tight loop in
 * _Run.run. It stops BEFORE the first opcode it does not handle, cannot complete (truncated,
 * over the eager size, invalid UTF-8, memo miss, stack underflow) or that would pass stop_at;
 * the Python loop then takes over that opcode, errors included. It never raises for bad input,
 * it only stops. Nothing is executed: the only Python code called is the constructors of the
 * machine's own value classes (Const, Seq, DictV), registered once by init().
 *
 * Every read of the input is checked against `end`, which is checked against the length of the
 * exported buffer (a buffer export also pins a bytearray or mmap while we read it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

static PyObject *Const_type = NULL;   /* Const(value) */
static PyObject *Seq_type = NULL;     /* Seq(kind, items, total) */
static PyObject *DictV_type = NULL;   /* DictV() */
static PyObject *small_ints = NULL;   /* tuple of the 256 shared Const(i) */
static PyObject *const_none = NULL;
static PyObject *const_true = NULL;
static PyObject *const_false = NULL;
static PyObject *str_list = NULL;
static PyObject *str_tuple = NULL;
static Py_ssize_t eager = 0;
/* Const is a slots dataclass (value, lazy=None): instances are filled in directly, as its
 * generated __init__ would, without running Python code for each constant. */
static Py_ssize_t const_value_offset = -1;
static Py_ssize_t const_lazy_offset = -1;

/* The offset of an object slot `name` of `type`, or -1 (with an exception set). */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *def = ((PyMemberDescrObject *)descr)->d_member;
    if (def->type != T_OBJECT_EX || def->offset < (Py_ssize_t)sizeof(PyObject) ||
        def->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    return def->offset;
}

static uint32_t
u4(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static PyObject *
fl_init(PyObject *self, PyObject *args)
{
    PyObject *c, *s, *d, *ints, *n, *t, *f;
    Py_ssize_t e;
    if (!PyArg_ParseTuple(args, "OOOO!OOOn", &c, &s, &d, &PyList_Type, &ints, &n, &t, &f, &e))
        return NULL;
    if (PyList_GET_SIZE(ints) != 256) {
        PyErr_SetString(PyExc_ValueError, "small_ints must hold 256 values");
        return NULL;
    }
    if (e < 0) {
        PyErr_SetString(PyExc_ValueError, "eager must be >= 0");
        return NULL;
    }
    if (!PyType_Check(c) || ((PyTypeObject *)c)->tp_alloc == NULL ||
        ((PyTypeObject *)c)->tp_itemsize != 0) {
        PyErr_SetString(PyExc_TypeError, "Const must be a class with fixed-size instances");
        return NULL;
    }
    if (PyObject_HasAttrString(c, "__post_init__")) { /* run() fills instances directly */
        PyErr_SetString(PyExc_TypeError, "Const must not have __post_init__");
        return NULL;
    }
    Py_ssize_t value_offset = slot_offset((PyTypeObject *)c, "value");
    Py_ssize_t lazy_offset = slot_offset((PyTypeObject *)c, "lazy");
    if (value_offset < 0 || lazy_offset < 0 || value_offset == lazy_offset)
        return NULL;
    if (str_list == NULL && (str_list = PyUnicode_InternFromString("list")) == NULL)
        return NULL;
    if (str_tuple == NULL && (str_tuple = PyUnicode_InternFromString("tuple")) == NULL)
        return NULL;
    Py_INCREF(c);
    Py_XSETREF(Const_type, c);
    Py_INCREF(s);
    Py_XSETREF(Seq_type, s);
    Py_INCREF(d);
    Py_XSETREF(DictV_type, d);
    PyObject *ints_copy = PyList_AsTuple(ints); /* fixed: the list could change later */
    if (ints_copy == NULL)
        return NULL;
    Py_XSETREF(small_ints, ints_copy);
    Py_INCREF(n);
    Py_XSETREF(const_none, n);
    Py_INCREF(t);
    Py_XSETREF(const_true, t);
    Py_INCREF(f);
    Py_XSETREF(const_false, f);
    eager = e;
    const_value_offset = value_offset;
    const_lazy_offset = lazy_offset;
    Py_RETURN_NONE;
}

/* Const(value); steals the reference to value. */
static PyObject *
make_const(PyObject *value)
{
    if (value == NULL)
        return NULL;
    PyTypeObject *type = (PyTypeObject *)Const_type;
    PyObject *r = type->tp_alloc(type, 0); /* zero-filled */
    if (r == NULL) {
        Py_DECREF(value);
        return NULL;
    }
    /* Const(value): value as given (the reference is stolen), lazy = None. */
    *(PyObject **)((char *)r + const_value_offset) = value;
    Py_INCREF(Py_None);
    *(PyObject **)((char *)r + const_lazy_offset) = Py_None;
    return r;
}

/* stack.append(v); steals the reference to v. Returns -1 on error. */
static int
push(PyObject *stack, PyObject *v)
{
    if (v == NULL)
        return -1;
    int rc = PyList_Append(stack, v);
    Py_DECREF(v);
    return rc;
}

static int
memo_put(PyObject *memo, unsigned long key, PyObject *v)
{
    PyObject *k = PyLong_FromUnsignedLong(key);
    if (k == NULL)
        return -1;
    int rc = PyDict_SetItem(memo, k, v);
    Py_DECREF(k);
    return rc;
}

/* 1: decoded into *out; 0: not valid UTF-8 (the Python loop reports it); -1: error. */
static int
decode_utf8(const unsigned char *s, Py_ssize_t n, PyObject **out)
{
    *out = PyUnicode_DecodeUTF8((const char *)s, n, "surrogatepass");
    if (*out != NULL)
        return 1;
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* run(raw, pos, end, index, stop_at, stack, memo, metastack, marked)
 *     -> (pos, index, stack, marked)
 * MARK pushes the current stack on metastack (adding its length to marked) and starts a new
 * one, as _Run.run does: the stack returned is the current one. */
static PyObject *
fl_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "run() takes 9 arguments");
        return NULL;
    }
    if (Const_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "init() was not called");
        return NULL;
    }
    PyObject *stack = args[5], *memo = args[6], *metastack = args[7];
    if (!PyList_CheckExact(stack) || !PyDict_CheckExact(memo) || !PyList_CheckExact(metastack)) {
        PyErr_SetString(PyExc_TypeError, "stack and metastack must be lists and memo a dict");
        return NULL;
    }
    Py_ssize_t pos, end, index, stop_at, marked;
    if ((pos = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred())
        return NULL;
    if ((end = PyLong_AsSsize_t(args[2])) == -1 && PyErr_Occurred())
        return NULL;
    if ((index = PyLong_AsSsize_t(args[3])) == -1 && PyErr_Occurred())
        return NULL;
    if ((stop_at = PyLong_AsSsize_t(args[4])) == -1 && PyErr_Occurred())
        return NULL;
    if ((marked = PyLong_AsSsize_t(args[8])) == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (pos < 0 || end < 0 || end > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "position outside the buffer");
        return NULL;
    }
    const unsigned char *raw = (const unsigned char *)view.buf;
    int failed = 0;
    Py_INCREF(stack); /* owned from here on: MARK replaces it */

    while (index < stop_at && pos < end) {
        unsigned char code = raw[pos];
        if (code == 0x58 || code == 0x8C) { /* BINUNICODE, SHORT_BINUNICODE */
            Py_ssize_t start;
            size_t len; /* unsigned: a 4-byte length may not fit a 32-bit Py_ssize_t */
            if (code == 0x8C) {
                if (pos + 2 > end)
                    break;
                start = pos + 2;
                len = raw[pos + 1];
            }
            else {
                if (pos + 5 > end)
                    break;
                start = pos + 5;
                len = u4(raw + pos + 1);
            }
            if (len > (size_t)eager || len > (size_t)(end - start))
                break;
            Py_ssize_t n = (Py_ssize_t)len;
            PyObject *text;
            int ok = decode_utf8(raw + start, n, &text);
            if (ok < 0) {
                failed = 1;
                break;
            }
            if (ok == 0)
                break;
            PyObject *value = make_const(text);
            if (value == NULL || PyList_Append(stack, value) < 0) {
                Py_XDECREF(value);
                failed = 1;
                break;
            }
            pos = start + n;
            /* The memo put that usually follows, in the same step (as the Python loop). */
            if (pos + 5 <= end && index + 1 < stop_at) {
                code = raw[pos];
                int rc = 0;
                if (code == 0x72) { /* LONG_BINPUT */
                    rc = memo_put(memo, u4(raw + pos + 1), value);
                    pos += 5;
                    index += 1;
                }
                else if (code == 0x94) { /* MEMOIZE */
                    rc = memo_put(memo, (unsigned long)PyDict_GET_SIZE(memo), value);
                    pos += 1;
                    index += 1;
                }
                else if (code == 0x71) { /* BINPUT */
                    rc = memo_put(memo, raw[pos + 1], value);
                    pos += 2;
                    index += 1;
                }
                if (rc < 0) {
                    Py_DECREF(value);
                    failed = 1;
                    break;
                }
            }
            Py_DECREF(value);
        }
        else if (code == 0x72 || code == 0x71 || code == 0x94) { /* (LONG_)BINPUT, MEMOIZE */
            Py_ssize_t size = PyList_GET_SIZE(stack);
            if (size == 0)
                break;
            PyObject *top = PyList_GET_ITEM(stack, size - 1);
            unsigned long key;
            Py_ssize_t step;
            if (code == 0x71) {
                if (pos + 2 > end)
                    break;
                key = raw[pos + 1];
                step = 2;
            }
            else if (code == 0x72) {
                if (pos + 5 > end)
                    break;
                key = u4(raw + pos + 1);
                step = 5;
            }
            else {
                key = (unsigned long)PyDict_GET_SIZE(memo);
                step = 1;
            }
            Py_INCREF(top);
            int rc = memo_put(memo, key, top);
            Py_DECREF(top);
            if (rc < 0) {
                failed = 1;
                break;
            }
            pos += step;
        }
        else if (code == 0x68 || code == 0x6A) { /* BINGET, LONG_BINGET */
            unsigned long key;
            Py_ssize_t step;
            if (code == 0x68) {
                if (pos + 2 > end)
                    break;
                key = raw[pos + 1];
                step = 2;
            }
            else {
                if (pos + 5 > end)
                    break;
                key = u4(raw + pos + 1);
                step = 5;
            }
            PyObject *k = PyLong_FromUnsignedLong(key);
            if (k == NULL) {
                failed = 1;
                break;
            }
            PyObject *got = PyDict_GetItemWithError(memo, k); /* borrowed */
            Py_DECREF(k);
            if (got == NULL) {
                if (PyErr_Occurred())
                    failed = 1;
                break;
            }
            if (PyList_Append(stack, got) < 0) {
                failed = 1;
                break;
            }
            pos += step;
        }
        else if (code == 0x4B) { /* BININT1 */
            if (pos + 2 > end)
                break;
            if (PyList_Append(stack, PyTuple_GET_ITEM(small_ints, raw[pos + 1])) < 0) {
                failed = 1;
                break;
            }
            pos += 2;
        }
        else if (code == 0x4A) { /* BININT */
            if (pos + 5 > end)
                break;
            int32_t v = (int32_t)u4(raw + pos + 1);
            if (push(stack, make_const(PyLong_FromLong(v))) < 0) {
                failed = 1;
                break;
            }
            pos += 5;
        }
        else if (code == 0x4D) { /* BININT2 */
            if (pos + 3 > end)
                break;
            long v = (long)raw[pos + 1] | ((long)raw[pos + 2] << 8);
            if (push(stack, make_const(PyLong_FromLong(v))) < 0) {
                failed = 1;
                break;
            }
            pos += 3;
        }
        else if (code == 0x47) { /* BINFLOAT: big-endian IEEE 754 double */
            if (pos + 9 > end)
                break;
            double d = PyFloat_Unpack8((const char *)raw + pos + 1, 0);
            if (d == -1.0 && PyErr_Occurred()) {
                failed = 1;
                break;
            }
            if (push(stack, make_const(PyFloat_FromDouble(d))) < 0) {
                failed = 1;
                break;
            }
            pos += 9;
        }
        else if (code == 0x4E || code == 0x88 || code == 0x89) { /* NONE, NEWTRUE, NEWFALSE */
            PyObject *v = code == 0x4E ? const_none : code == 0x88 ? const_true : const_false;
            if (PyList_Append(stack, v) < 0) {
                failed = 1;
                break;
            }
            pos += 1;
        }
        else if (code >= 0x85 && code <= 0x87) { /* TUPLE1, TUPLE2, TUPLE3 */
            Py_ssize_t n = code - 0x84;
            Py_ssize_t size = PyList_GET_SIZE(stack);
            if (size < n)
                break;
            PyObject *items = PyList_GetSlice(stack, size - n, size);
            if (items == NULL) {
                failed = 1;
                break;
            }
            if (PyList_SetSlice(stack, size - n, size, NULL) < 0) {
                Py_DECREF(items);
                failed = 1;
                break;
            }
            PyObject *total = PyLong_FromSsize_t(n);
            if (total == NULL) {
                Py_DECREF(items);
                failed = 1;
                break;
            }
            PyObject *cargs[3] = {str_tuple, items, total};
            PyObject *seq = PyObject_Vectorcall(Seq_type, cargs, 3, NULL);
            Py_DECREF(items);
            Py_DECREF(total);
            if (push(stack, seq) < 0) {
                failed = 1;
                break;
            }
            pos += 1;
        }
        else if (code == 0x7D) { /* EMPTY_DICT */
            if (push(stack, PyObject_CallNoArgs(DictV_type)) < 0) {
                failed = 1;
                break;
            }
            pos += 1;
        }
        else if (code == 0x5D || code == 0x29) { /* EMPTY_LIST, EMPTY_TUPLE */
            PyObject *kind = code == 0x5D ? str_list : str_tuple;
            if (push(stack, PyObject_CallOneArg(Seq_type, kind)) < 0) {
                failed = 1;
                break;
            }
            pos += 1;
        }
        else if (code == 0x55 || code == 0x43) { /* SHORT_BINSTRING, SHORT_BINBYTES */
            if (pos + 2 > end)
                break;
            Py_ssize_t start = pos + 2;
            Py_ssize_t n = raw[pos + 1];
            if (start + n > end)
                break;
            PyObject *v;
            if (code == 0x55) /* a Python 2 str: kept as text (see _op_string) */
                v = PyUnicode_DecodeLatin1((const char *)raw + start, n, NULL);
            else
                v = PyBytes_FromStringAndSize((const char *)raw + start, n);
            if (push(stack, make_const(v)) < 0) {
                failed = 1;
                break;
            }
            pos = start + n;
        }
        else if (code == 0x28) { /* MARK */
            PyObject *fresh = PyList_New(0);
            if (fresh == NULL || PyList_Append(metastack, stack) < 0) {
                Py_XDECREF(fresh);
                failed = 1;
                break;
            }
            marked += PyList_GET_SIZE(stack);
            Py_SETREF(stack, fresh);
            pos += 1;
        }
        else {
            break;
        }
        index += 1;
    }
    PyBuffer_Release(&view);
    if (failed) {
        Py_DECREF(stack);
        return NULL;
    }
    return Py_BuildValue("(nnNn)", pos, index, stack, marked); /* N: passes our reference on */
}

static PyMethodDef methods[] = {
    {"init", fl_init, METH_VARARGS,
     "init(Const, Seq, DictV, small_ints, none, true, false, eager): register the value types"},
    {"run", (PyCFunction)(void (*)(void))fl_run, METH_FASTCALL,
     "run(raw, pos, end, index, stop_at, stack, memo, metastack, marked)"
     " -> (pos, index, stack, marked)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastloop",
    "Optional C accelerator of the pickle machine's plain-data loop.", -1, methods,
};

PyMODINIT_FUNC
PyInit__fastloop(void)
{
    return PyModule_Create(&module);
}
