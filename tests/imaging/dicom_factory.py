"""Synthetic DICOM for the imaging tests, built with pydicom (and highdicom for SEG), never with embplan code.

Each writer returns a ``Truth``: the geometry it used (origin, unit vectors of the slice, row and column steps)
and the values it stored, in the order it wrote them. ``Truth.index_of(points)`` maps patient points back to the
writer's own (slice, row, column) indices, so a test can check a reader's array voxel by voxel in patient space,
whatever order and orientation the reader chose -- without trusting embplan's Grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
NM_IMAGE = "1.2.840.10008.5.1.4.1.1.20"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"

#: Image Orientation (Patient) of the usual patient positions (row direction, column direction).
ORIENTATIONS = {
    "HFS": ((1, 0, 0), (0, 1, 0)),  # head first supine
    "FFS": ((-1, 0, 0), (0, 1, 0)),  # feet first supine
    "HFP": ((-1, 0, 0), (0, -1, 0)),  # head first prone
    "HFDL": ((0, -1, 0), (1, 0, 0)),  # head first decubitus left
}


@dataclass
class Study:
    patient_id: str = "EMB-TEST-001"
    patient_name: str = "Test^Phantom"
    study_uid: str = field(default_factory=generate_uid)
    for_uid: str = field(default_factory=generate_uid)
    study_date: str = "20240301"
    study_time: str = "083000"


@dataclass
class Geometry:
    """Voxel (k, j, i) centre = origin + k*dk*slice_dir + j*dj*col_dir + i*di*row_dir."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # (dk, dj=row spacing, di=column spacing)
    origin: tuple[float, float, float]
    row_dir: tuple[float, float, float] = (1, 0, 0)
    col_dir: tuple[float, float, float] = (0, 1, 0)
    slice_dir: tuple[float, float, float] | None = None  # default: row x col

    def __post_init__(self) -> None:
        if self.slice_dir is None:
            self.slice_dir = tuple(np.cross(self.row_dir, self.col_dir).astype(float))

    @property
    def iop(self) -> list[float]:
        return [float(v) for v in (*self.row_dir, *self.col_dir)]

    @property
    def normal(self) -> np.ndarray:
        return np.cross(np.asarray(self.row_dir, float), np.asarray(self.col_dir, float))

    def slice_position(self, k: int) -> np.ndarray:
        return np.asarray(self.origin, float) + k * self.spacing[0] * np.asarray(self.slice_dir, float)

    def matrix(self) -> np.ndarray:
        """3x3 with columns the patient steps of k, j, i."""
        return np.column_stack([
            self.spacing[0] * np.asarray(self.slice_dir, float),
            self.spacing[1] * np.asarray(self.col_dir, float),
            self.spacing[2] * np.asarray(self.row_dir, float),
        ])

    def points(self) -> np.ndarray:
        k, j, i = np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij")
        idx = np.stack([k, j, i], axis=-1).astype(float)
        return idx @ self.matrix().T + np.asarray(self.origin, float)


def geometry(position: str, shape, spacing, origin, *, reverse_slices: bool = False) -> Geometry:
    row, col = ORIENTATIONS[position]
    normal = tuple(np.cross(row, col).astype(float))
    slice_dir = tuple(-v for v in normal) if reverse_slices else normal
    return Geometry(shape=tuple(shape), spacing=tuple(float(s) for s in spacing), origin=tuple(float(o) for o in origin),
                    row_dir=row, col_dir=col, slice_dir=slice_dir)


@dataclass
class Truth:
    geom: Geometry
    values: np.ndarray  # (k, j, i) as written, physical units
    paths: list[Path]
    series_uid: str
    for_uid: str
    sop_instance_uids: list[str] = field(default_factory=list)

    def index_of(self, points_xyz: np.ndarray) -> np.ndarray:
        """Writer's (k, j, i) of patient points (fractional)."""
        m = self.geom.matrix()
        return (np.asarray(points_xyz, float) - np.asarray(self.geom.origin, float)) @ np.linalg.inv(m).T

    def values_at(self, points_xyz: np.ndarray) -> np.ndarray:
        idx = self.index_of(points_xyz)
        r = np.rint(idx)
        assert np.abs(idx - r).max() < 1e-6, "points are not voxel centres of the written geometry"
        r = r.astype(int)
        return self.values[r[..., 0], r[..., 1], r[..., 2]]


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    return fm


def _base(sop_class: str, modality: str, study: Study, series_uid: str, series_number: int = 1) -> Dataset:
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = study.for_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "dicom_factory"
    return ds


def _image_pixel(ds: Dataset, raw: np.ndarray, signed: bool) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(raw.shape[-2]), int(raw.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = raw.astype("<i2" if signed else "<u2").tobytes()


def write_ct_series(
    folder: Path, geom: Geometry, hu: np.ndarray, study: Study, *, series_uid: str | None = None,
    slope: float = 1.0, intercept: float = -1024.0, file_order: str = "instance", rng: np.random.Generator | None = None,
    series_description: str = "Abdomen 2.5mm",
) -> Truth:
    """One file per slice; HU stored as int16 via Rescale Slope/Intercept. ``file_order``: 'instance' (file names
    follow k), 'reversed' or 'shuffled' (file names in another order than the slices)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    raw = np.rint((np.asarray(hu, float) - intercept) / slope).astype(np.int16)
    values = raw * slope + intercept
    nk = geom.shape[0]
    names = list(range(nk))
    if file_order == "reversed":
        names = names[::-1]
    elif file_order == "shuffled":
        (rng or np.random.default_rng(0)).shuffle(names)
    paths, uids = [], []
    for k in range(nk):
        ds = _base(CT_IMAGE, "CT", study, series_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesDate = study.study_date
        ds.SeriesTime = "084500"
        ds.AcquisitionDate = study.study_date
        ds.AcquisitionTime = "084510"
        ds.PatientPosition = "HFS"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in geom.slice_position(k)]
        ds.ImageOrientationPatient = geom.iop
        ds.PixelSpacing = [geom.spacing[1], geom.spacing[2]]
        ds.SliceThickness = geom.spacing[0]
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.RescaleType = "HU"
        ds.AcquisitionNumber = 1  # CT Image module, type 2
        ds.BodyPartExamined = "ABDOMEN"  # with it, Laterality (2C, paired organs only) stays absent
        ds.KVP = "120"
        ds.SeriesDescription = series_description
        _image_pixel(ds, raw[k], signed=True)
        p = folder / f"ct_{names[k]:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
        uids.append(ds.SOPInstanceUID)
    return Truth(geom=geom, values=values, paths=paths, series_uid=series_uid, for_uid=study.for_uid, sop_instance_uids=uids)


def _radiopharm(name: str, nuclide: str, total_bq: float, half_life_s: float, start: datetime | None) -> Dataset:
    item = Dataset()
    item.Radiopharmaceutical = name
    item.RadionuclideTotalDose = total_bq
    item.RadionuclideHalfLife = half_life_s
    if start is not None:
        item.RadiopharmaceuticalStartDateTime = start.strftime("%Y%m%d%H%M%S")
        item.RadiopharmaceuticalStartTime = start.strftime("%H%M%S")
    code = Dataset()
    code.CodeValue = "74107004" if "Y" in nuclide else "44588005"  # SNOMED CT Y-90 / Tc-99m
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = nuclide
    item.RadionuclideCodeSequence = Sequence([code])
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _nm_vendor(ds: Dataset, raw: np.ndarray) -> None:
    """The layout of a vendor's reconstructed SPECT (e.g. a Siemens Symbia or GE NM/CT 870 reconstruction exported
    as NM Image, PS3.3 A.5): energy window, detector (collimator), rotation and coded patient orientation
    sequences, counts accumulated, number of rotations; Actual Frame Duration per view in the rotation item."""
    ds.CountsAccumulated = int(raw.sum())
    ds.NumberOfRotations = 1
    ds.NumberOfEnergyWindows = 1
    ds.NumberOfDetectors = 1
    rng_ = Dataset()
    rng_.EnergyWindowLowerLimit = "126.45"
    rng_.EnergyWindowUpperLimit = "154.55"
    win = Dataset()
    win.EnergyWindowRangeSequence = Sequence([rng_])
    win.EnergyWindowName = "EM"
    ds.EnergyWindowInformationSequence = Sequence([win])
    rot = Dataset()
    rot.StartAngle = "180"
    rot.AngularStep = "3"
    rot.RotationDirection = "CC"
    rot.ScanArc = "180"
    rot.ActualFrameDuration = 25000
    rot.NumberOfFramesInRotation = 60
    ds.RotationInformationSequence = Sequence([rot])
    orient = _code("102538003", "SCT", "recumbent")
    orient.PatientOrientationModifierCodeSequence = Sequence([_code("40199007", "SCT", "supine")])
    ds.PatientOrientationCodeSequence = Sequence([orient])
    ds.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])
    ds.BodyPartExamined = "ABDOMEN"


def write_nm(
    path: Path, geom: Geometry, counts: np.ndarray, study: Study, *, series_uid: str | None = None,
    spacing_between_slices: bool = True, image_type: str = "RECON TOMO", acquisition: datetime | None = None,
    radiopharmaceutical: tuple[str, str, float, float] = ("Tc99m MAA", "^99m^Technetium", 150e6, 21624.12),
    administration: datetime | None = None,
) -> Truth:
    """A multi-frame NM reconstruction. Frames follow geom.slice_dir; Spacing Between Slices is +dk when that is
    the slice normal, -dk when it runs against it (the older convention)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    raw = np.rint(np.asarray(counts, float)).astype(np.uint16)
    ds = _base(NM_IMAGE, "NM", study, series_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", image_type, "EMISSION"]
    acq = acquisition or datetime(2024, 3, 1, 10, 0, 0)
    ds.SeriesDate = ds.AcquisitionDate = acq.strftime("%Y%m%d")
    ds.SeriesTime = ds.AcquisitionTime = acq.strftime("%H%M%S")
    ds.InstanceNumber = 1
    ds.NumberOfFrames = geom.shape[0]
    ds.NumberOfSlices = geom.shape[0]
    ds.FrameIncrementPointer = [0x00540080]
    ds.SliceVector = list(range(1, geom.shape[0] + 1))
    ds.PixelSpacing = [geom.spacing[1], geom.spacing[2]]
    ds.SliceThickness = geom.spacing[0]
    if spacing_between_slices:
        sign = 1.0 if np.dot(geom.normal, geom.slice_dir) > 0 else -1.0
        ds.SpacingBetweenSlices = sign * geom.spacing[0]
    det = Dataset()
    det.ImagePositionPatient = [float(v) for v in geom.origin]
    det.ImageOrientationPatient = geom.iop
    det.CollimatorGridName = "LEHR"
    det.CollimatorType = "PARA"
    ds.DetectorInformationSequence = Sequence([det])
    _nm_vendor(ds, raw)
    name, nuclide, total, half = radiopharmaceutical
    ds.RadiopharmaceuticalInformationSequence = Sequence([_radiopharm(name, nuclide, total, half, administration)])
    _image_pixel(ds, raw, signed=False)
    ds.save_as(path, enforce_file_format=True)
    return Truth(geom=geom, values=raw.astype(float), paths=[path], series_uid=series_uid, for_uid=study.for_uid,
                 sop_instance_uids=[ds.SOPInstanceUID])


def write_pet_series(
    folder: Path, geom: Geometry, conc_bq_ml: np.ndarray, study: Study, *, series_uid: str | None = None,
    units: str = "BQML", decay_correction: str = "START", series_time: datetime | None = None,
    administration: datetime | None = None, total_dose_bq: float = 3.0e9, half_life_s: float = 230760.0,
    frame_duration_ms: float = 900000.0, with_datetime: bool = True,
    corrected_image: tuple[str, ...] = ("DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"),
) -> Truth:
    """One file per slice, int16 with a per-slice Rescale Slope (as PET scanners write)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    st = series_time or datetime(2024, 3, 2, 9, 0, 0)
    admin = administration or datetime(2024, 3, 1, 11, 30, 0)
    conc = np.asarray(conc_bq_ml, float)
    values = np.empty_like(conc)
    paths, uids = [], []
    for k in range(geom.shape[0]):
        peak = max(float(np.abs(conc[k]).max()), 1e-9)
        slope = peak / 32000.0
        raw = np.rint(conc[k] / slope).astype(np.int16)
        ds = _base(PET_IMAGE, "PT", study, series_uid)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesDate = st.strftime("%Y%m%d")
        ds.SeriesTime = st.strftime("%H%M%S")
        ds.AcquisitionDate = st.strftime("%Y%m%d")
        ds.AcquisitionTime = st.strftime("%H%M%S")
        ds.Units = units
        ds.DecayCorrection = decay_correction
        ds.CorrectedImage = list(corrected_image)
        ds.ActualFrameDuration = frame_duration_ms
        ds.DecayFactor = 1.0
        # PET Series / PET Image modules as vendors write them (PS3.3 C.8.9.1, C.8.9.4)
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CountsSource = "EMISSION"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "measured,CT"
        ds.ReconstructionMethod = "OSEM 3i21s"
        ds.NumberOfSlices = geom.shape[0]
        ds.ImageIndex = k + 1
        ds.FrameReferenceTime = 0
        ds.AcquisitionStartCondition = "MANU"
        ds.CollimatorType = "NONE"  # PET Series, type 2: no septa (3D acquisition)
        orient = _code("102538003", "SCT", "recumbent")
        orient.PatientOrientationModifierCodeSequence = Sequence([_code("40199007", "SCT", "supine")])
        ds.PatientOrientationCodeSequence = Sequence([orient])
        ds.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])
        ds.BodyPartExamined = "ABDOMEN"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in geom.slice_position(k)]
        ds.ImageOrientationPatient = geom.iop
        ds.PixelSpacing = [geom.spacing[1], geom.spacing[2]]
        ds.SliceThickness = geom.spacing[0]
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = 0
        values[k] = raw * float(ds.RescaleSlope)
        item = _radiopharm("Y-90 microspheres", "^90^Yttrium", total_dose_bq, half_life_s, admin if with_datetime else None)
        if not with_datetime:
            item.RadiopharmaceuticalStartTime = admin.strftime("%H%M%S")
        ds.RadiopharmaceuticalInformationSequence = Sequence([item])
        _image_pixel(ds, raw, signed=True)
        p = folder / f"pt_{k:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
        uids.append(ds.SOPInstanceUID)
    return Truth(geom=geom, values=values, paths=paths, series_uid=series_uid, for_uid=study.for_uid, sop_instance_uids=uids)


# ----------------------------------------------------------------------------------------------------- contours
def circle(center: np.ndarray, radius: float, u: np.ndarray, v: np.ndarray, n_points: int = 180) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)
    return center + radius * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)


def sphere_contours(geom: Geometry, center, radius: float, n_points: int = 180) -> list[np.ndarray]:
    """Circles where the sphere cuts the slice planes of ``geom`` (as a contouring tool draws it)."""
    c = np.asarray(center, float)
    n = np.asarray(geom.slice_dir, float)
    u, v = np.asarray(geom.row_dir, float), np.asarray(geom.col_dir, float)
    out = []
    for k in range(geom.shape[0]):
        p = geom.slice_position(k)
        d = float(np.dot(p - c, n))
        if abs(d) >= radius:
            continue
        out.append(circle(c + d * n, math.sqrt(radius * radius - d * d), u, v, n_points))
    return out


def ring_contours(geom: Geometry, center, r_out: float, r_in: float, k_range: range, n_points: int = 180) -> list[np.ndarray]:
    """An outer and an inner circle on each slice plane in ``k_range`` (a tube with a hole)."""
    c = np.asarray(center, float)
    n = np.asarray(geom.slice_dir, float)
    u, v = np.asarray(geom.row_dir, float), np.asarray(geom.col_dir, float)
    out = []
    for k in k_range:
        p = geom.slice_position(k)
        cc = c + float(np.dot(p - c, n)) * n
        out.append(circle(cc, r_out, u, v, n_points))
        out.append(circle(cc, r_in, u, v, n_points)[::-1])
    return out


def write_rtstruct(
    path: Path, structures: dict[str, list[np.ndarray]], study: Study, *, referenced_series_uid: str | None = None,
    roi_for_uid: str | None = None, point_roi: bool = True,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _base(RT_STRUCT, "RTSTRUCT", study, generate_uid())
    del ds.FrameOfReferenceUID, ds.PositionReferenceIndicator
    ds.StructureSetLabel = "TEST"
    ds.StructureSetDate = study.study_date
    ds.StructureSetTime = study.study_time
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = study.for_uid
    if referenced_series_uid:
        rs = Dataset()
        rs.SeriesInstanceUID = referenced_series_uid
        rs.ContourImageSequence = Sequence([])
        st = Dataset()
        st.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
        st.ReferencedSOPInstanceUID = study.study_uid
        st.RTReferencedSeriesSequence = Sequence([rs])
        ref_for.RTReferencedStudySequence = Sequence([st])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_for])
    rois, contours_seq, obs = [], [], []
    items = list(structures.items())
    if point_roi:
        items.append(("Isocenter", []))
    for number, (name, contours) in enumerate(items, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = roi_for_uid or study.for_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ROIDisplayColor = [255, 0, 0]
        seq = []
        if name == "Isocenter" and not contours:
            c = Dataset()
            c.ContourGeometricType = "POINT"
            c.NumberOfContourPoints = 1
            c.ContourData = [0.0, 0.0, 0.0]
            seq.append(c)
        for n_c, pts in enumerate(contours):
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(pts)
            c.ContourNumber = n_c + 1
            c.ContourData = [f"{x:.6f}" for x in np.asarray(pts, float).reshape(-1)]
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        contours_seq.append(rc)
        o = Dataset()
        o.ObservationNumber = number
        o.ReferencedROINumber = number
        o.RTROIInterpretedType = "ORGAN"
        o.ROIInterpreter = ""
        obs.append(o)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours_seq)
    ds.RTROIObservationsSequence = Sequence(obs)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seg(path: Path, ct: Truth, mask: np.ndarray, label: str = "Liver") -> Path:
    """A BINARY DICOM SEG (highdicom) of ``mask`` (k, j, i on the CT truth's geometry) referencing the CT files;
    highdicom leaves out empty frames."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in ct.paths]
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label, segmented_property_category=codes.SCT.Organ,
        segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=np.asarray(mask, dtype=np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=generate_uid(), series_number=3, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="dicom_factory", manufacturer_model_name="dicom_factory", software_versions="1",
        device_serial_number="1",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def _seq_item(**kw) -> Sequence:
    item = Dataset()
    for k, v in kw.items():
        setattr(item, k, v)
    return Sequence([item])


def _enhanced_ct_modules(ds: Dataset) -> None:
    """Image-level attributes of the Enhanced CT Image IOD (PS3.3 A.38.1) a scanner writes."""
    ds.BodyPartExamined = "ABDOMEN"
    ds.ManufacturerModelName = "dicom_factory"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1"
    ds.AcquisitionContextSequence = Sequence([])
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionDuration = 5.0


def _enhanced_ct_shared_macros(shared: Dataset, geom: Geometry) -> None:
    """The CT functional group macros of PS3.3 C.8.15.3 (one item each, in the shared groups): an abdominal helical
    acquisition at 120 kV as a 64-slice scanner records it."""
    anat = Dataset()
    anat.AnatomicRegionSequence = Sequence([_code("818981001", "SCT", "Abdomen")])
    anat.FrameLaterality = "U"
    shared.FrameAnatomySequence = Sequence([anat])
    shared.IrradiationEventIdentificationSequence = _seq_item(IrradiationEventUID=generate_uid())
    shared.CTImageFrameTypeSequence = _seq_item(FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
                                                PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
                                                VolumeBasedCalculationTechnique="NONE")
    shared.CTAcquisitionTypeSequence = _seq_item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO",
                                                 FluoroscopyFlag="NO")
    shared.CTAcquisitionDetailsSequence = _seq_item(DataCollectionDiameter=500.0, RevolutionTime=0.5,
                                                    SingleCollimationWidth=0.625, TotalCollimationWidth=40.0,
                                                    TableHeight=150.0, GantryDetectorTilt=0.0)
    shared.CTTableDynamicsSequence = _seq_item(TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0)
    shared.CTPositionSequence = _seq_item(TablePosition=0.0, ReconstructionTargetCenterPatient=[0.0, 0.0, 0.0],
                                          DataCollectionCenterPatient=[0.0, 0.0, 0.0])
    shared.CTGeometrySequence = _seq_item(DistanceSourceToDetector=1085.6, DistanceSourceToDataCollectionCenter=595.0)
    shared.CTReconstructionSequence = _seq_item(
        ReconstructionAlgorithm="ITERATIVE", ConvolutionKernel="B30f", ConvolutionKernelGroup="SOFT_TISSUE",
        ReconstructionDiameter=geom.shape[2] * geom.spacing[2], ReconstructionPixelSpacing=[geom.spacing[1], geom.spacing[2]],
        ReconstructionAngle=360.0, ImageFilter="NONE")
    shared.CTExposureSequence = _seq_item(ExposureTimeInms=500.0, XRayTubeCurrentInmA=200.0, ExposureInmAs=100.0,
                                          ExposureModulationType="NONE", CTDIvol=8.0,
                                          CTDIPhantomTypeCodeSequence=Sequence([
                                              _code("113691", "DCM", "IEC Body Dosimetry Phantom")]))
    shared.CTXRayDetailsSequence = _seq_item(KVP=120.0, FocalSpots=[1.2], FilterType="BODY", FilterMaterial=["ALUMINUM"])


def write_enhanced_ct(
    path: Path, geom: Geometry, hu: np.ndarray, study: Study, *, series_uid: str | None = None,
    frame_order: list[int] | None = None, intercept: float = -1024.0, slope: float = 1.0,
) -> Truth:
    """An Enhanced CT Image (PS3.3 A.38) in one file: orientation, pixel measures and pixel value transformation in
    the Shared Functional Groups, each frame's Plane Position and Frame Content in its Per-frame item. Frames are
    stored in ``frame_order`` (slice indices k; default: along the slices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    raw = np.rint((np.asarray(hu, float) - intercept) / slope).astype(np.int16)
    values = raw * slope + intercept
    order = list(range(geom.shape[0])) if frame_order is None else list(frame_order)
    ds = _base(ENHANCED_CT_IMAGE, "CT", study, series_uid)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.SeriesDate = study.study_date
    ds.SeriesTime = "084500"
    ds.ContentDate = study.study_date
    ds.ContentTime = "084510"
    ds.AcquisitionDateTime = study.study_date + "084510"
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.PatientPosition = "HFS"
    ds.NumberOfFrames = len(order)
    _enhanced_ct_modules(ds)
    dim_uid = generate_uid()
    org = Dataset()
    org.DimensionOrganizationUID = dim_uid
    ds.DimensionOrganizationSequence = Sequence([org])
    dims = []
    for pointer in (0x00209056, 0x00209057):  # Stack ID, In-Stack Position Number (Frame Content Sequence)
        item = Dataset()
        item.DimensionOrganizationUID = dim_uid
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = 0x00209111
        dims.append(item)
    ds.DimensionIndexSequence = Sequence(dims)
    shared = Dataset()
    _enhanced_ct_shared_macros(shared, geom)
    po = Dataset()
    po.ImageOrientationPatient = geom.iop
    shared.PlaneOrientationSequence = Sequence([po])
    pm = Dataset()
    pm.PixelSpacing = [geom.spacing[1], geom.spacing[2]]
    pm.SliceThickness = geom.spacing[0]
    shared.PixelMeasuresSequence = Sequence([pm])
    pvt = Dataset()
    pvt.RescaleIntercept = intercept
    pvt.RescaleSlope = slope
    pvt.RescaleType = "HU"
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for n, k in enumerate(order):
        fr = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [float(v) for v in geom.slice_position(k)]
        fr.PlanePositionSequence = Sequence([pp])
        fc = Dataset()
        fc.StackID = "1"
        fc.InStackPositionNumber = k + 1
        fc.FrameAcquisitionNumber = n + 1
        fc.DimensionIndexValues = [1, k + 1]
        fc.FrameReferenceDateTime = ds.AcquisitionDateTime
        fc.FrameAcquisitionDateTime = ds.AcquisitionDateTime
        fc.FrameAcquisitionDuration = 500.0
        fr.FrameContentSequence = Sequence([fc])
        per.append(fr)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    _image_pixel(ds, raw[order], signed=True)
    ds.save_as(path, enforce_file_format=True)
    return Truth(geom=geom, values=values, paths=[path], series_uid=series_uid, for_uid=study.for_uid,
                 sop_instance_uids=[ds.SOPInstanceUID])
