"""Must-reject variants of a pysaml2 Response, made with lxml. Each is an `edit(xml, req) ->
xml` applied to the Response pysaml2 built for AuthnRequest `req`. `resigned(...)` edits are
signed again by the IdP (pysaml2 + xmlsec1), so their one defect is the edited field, not the
signature; `unsigned_edit(...)` keeps the old signature values (tampering after signing)."""
import copy
import datetime as dt
import uuid

from lxml import etree

from idp import ASSERTION, NS, parse, tostring


def iso(delta_secs):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delta_secs)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def resigned(idp, fn, assertion=True, response=True):
    def edit(xml, req):
        doc = parse(xml)
        fn(doc, req)
        return idp.resign(tostring(doc), assertion=assertion, response=response)
    return edit


def unsigned_edit(fn):
    def edit(xml, req):
        doc = parse(xml)
        fn(doc, req)
        return tostring(doc)
    return edit


def all_(doc, path):
    found = doc.findall(path, NS)
    assert found, f"nothing at {path}"
    return found


def set_attr(path, name, value):
    def fn(doc, req):
        for el in all_(doc, path):
            el.set(name, value)
    return fn


def set_text(path, value):
    def fn(doc, req):
        for el in all_(doc, path):
            el.text = value
    return fn


def attr_values(doc, name):
    """AttributeValue elements of the attributes whose Name or FriendlyName is `name`."""
    return [v for a in doc.iterfind(".//saml:Attribute", NS)
            if name in (a.get("FriendlyName"), a.get("Name"))
            for v in a.findall("saml:AttributeValue", NS)]


def to_user(email):
    """NameID and mail become another user's."""
    def fn(doc, req):
        for el in all_(doc, ".//saml:Subject/saml:NameID"):
            el.text = email
        for v in attr_values(doc, "mail"):
            v.text = email
    return fn


def add_group(group):
    def fn(doc, req):
        vals = attr_values(doc, "groups")
        assert vals, "no groups attribute"
        extra = copy.deepcopy(vals[0])
        extra.text = group
        vals[-1].addnext(extra)
    return fn


def expired(doc, req):
    for el in all_(doc, ".//saml:Conditions"):
        el.set("NotBefore", iso(-1800))
        el.set("NotOnOrAfter", iso(-900))
    for el in all_(doc, ".//saml:SubjectConfirmationData"):
        el.set("NotOnOrAfter", iso(-900))
    for el in [doc, *all_(doc, "saml:Assertion"), *doc.iterfind(".//saml:AuthnStatement", NS)]:
        el.set("AuthnInstant" if el.tag.endswith("AuthnStatement") else "IssueInstant", iso(-1800))


def not_yet_valid(doc, req):
    for el in all_(doc, ".//saml:Conditions"):
        el.set("NotBefore", iso(900))
        el.set("NotOnOrAfter", iso(1800))


def in_response_to(value):
    def fn(doc, req):
        doc.set("InResponseTo", value)
        for el in all_(doc, ".//saml:SubjectConfirmationData"):
            el.set("InResponseTo", value)
    return fn


def issuer(value):
    return set_text(".//saml:Issuer", value)


def two_assertions(idp, email):
    """A second assertion (another user) next to the first; both signed, then the Response."""
    def edit(xml, req):
        doc = parse(xml)
        a = doc.find("saml:Assertion", NS)
        b = copy.deepcopy(a)
        b.set("ID", "_" + uuid.uuid4().hex)
        b.find("saml:Subject/saml:NameID", NS).text = email
        b.find("ds:Signature/ds:SignedInfo/ds:Reference", NS).set("URI", "#" + b.get("ID"))
        a.addnext(b)
        xml = idp.server.sec.sign_statement(tostring(doc), ASSERTION, node_id=b.get("ID"))
        return idp.resign(xml)
    return edit


def doctype(xml, req):
    body = xml.split("?>", 1)[1] if xml.lstrip().startswith("<?xml") else xml
    return '<?xml version="1.0"?>\n<!DOCTYPE Response [<!ENTITY x "x">]>\n' + body.lstrip()


# XML signature wrapping, after the XSW1-8 descriptions in Somorovsky et al., "On Breaking
# SAML: Be Whoever You Want to Be" (USENIX Security 2012) and SAML Raider.
def evil_assertion(signed_assertion, email):
    evil = copy.deepcopy(signed_assertion)
    evil.set("ID", "_evil" + uuid.uuid4().hex)
    sig = evil.find("ds:Signature", NS)
    if sig is not None:
        evil.remove(sig)
    evil.find("saml:Subject/saml:NameID", NS).text = email
    for v in attr_values(evil, "mail"):
        v.text = email
    return evil


def xsw_response(kind, email):
    """XSW1/2 (Response signed): an evil Response whose copied Signature still points at the
    original; the original signed Response is placed inside that Signature (XSW1) or before
    it (XSW2)."""
    def edit(xml, req):
        orig = parse(xml)
        evil = copy.deepcopy(orig)
        evil.set("ID", "_evil" + uuid.uuid4().hex)
        evil.replace(evil.find("saml:Assertion", NS),
                     evil_assertion(orig.find("saml:Assertion", NS), email))
        sig = evil.find("ds:Signature", NS)
        if kind == 1:
            sig.append(orig)
        else:
            sig.addprevious(orig)
        return tostring(evil)
    return edit


def xsw_assertion(kind, email):
    """XSW3-8 (Assertion signed, Response not): an evil assertion beside or around it."""
    def edit(xml, req):
        doc = parse(xml)
        a = doc.find("saml:Assertion", NS)
        evil = evil_assertion(a, email)
        if kind == 3:       # evil assertion before the signed one
            a.addprevious(evil)
        elif kind == 4:     # the signed assertion inside the evil one
            doc.replace(a, evil)
            evil.append(a)
        elif kind == 5:     # the evil one carries the signature; the original, unsigned, after
            sig = a.find("ds:Signature", NS)
            a.remove(sig)
            evil.insert(1, sig)
            doc.replace(a, evil)
            doc.append(a)
        elif kind == 6:     # the original inside the evil assertion's copied Signature
            sig = copy.deepcopy(a.find("ds:Signature", NS))
            evil.insert(1, sig)
            doc.replace(a, evil)
            sig.append(a)
        elif kind == 7:     # the original in a samlp:Extensions, the evil assertion used
            ext = etree.SubElement(doc, "{%s}Extensions" % NS["samlp"])
            doc.remove(ext)
            doc.replace(a, evil)
            evil.addprevious(ext)
            ext.append(a)
        elif kind == 8:     # the original (its signature removed) in a ds:Object of the evil
            sig = copy.deepcopy(a.find("ds:Signature", NS))
            obj = etree.SubElement(sig, "{%s}Object" % NS["ds"])
            evil.insert(1, sig)
            doc.replace(a, evil)
            a.remove(a.find("ds:Signature", NS))
            obj.append(a)
        return tostring(doc)
    return edit


def comment_in_name_id(whole, prefix):
    """CVE-2017-11427: the NameID (and mail) `whole` = prefix + rest is signed as is; then a
    comment is put after `prefix`. Exclusive c14n drops comments, so the signature still holds;
    an SP reading only the first text node would see `prefix`."""
    def edit(xml, req):
        doc = parse(xml)
        els = [*doc.iterfind(".//saml:Subject/saml:NameID", NS), *attr_values(doc, "mail")]
        assert els
        for el in els:
            assert el.text == whole, el.text
            el.text = prefix
            c = etree.Comment("")
            c.tail = whole[len(prefix):]
            el.append(c)
        return tostring(doc)
    return edit
