package coco

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// rleJSON is COCO's RLE object; counts is either the compressed string or,
// in uncompressed form (crowd annotations), an array of run lengths.
type rleJSON struct {
	Size   []int           `json:"size"`
	Counts json.RawMessage `json:"counts"`
}

// MarshalJSON writes {"size":[h,w],"counts":"<compressed string>"}, the form
// pycocotools' encode produces and COCO results files carry.
func (r RLE) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Size   [2]int `json:"size"`
		Counts string `json:"counts"`
	}{r.Size, r.CountsString()})
}

// UnmarshalJSON reads {"size":[h,w],"counts":...} with counts as a
// compressed string or as an array of run lengths, and checks that the runs
// cover the mask.
func (r *RLE) UnmarshalJSON(data []byte) error {
	var j rleJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return fmt.Errorf("rle: %w", err)
	}
	if len(j.Size) != 2 {
		return fmt.Errorf("rle: %w: size has %d numbers, want [h, w]", ErrBadRLE, len(j.Size))
	}
	h, w := j.Size[0], j.Size[1]
	raw := bytes.TrimSpace(j.Counts)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return fmt.Errorf("rle: %w: no counts", ErrBadRLE)
	}
	var out RLE
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("rle counts: %w", err)
		}
		var err error
		if out, err = ParseCounts(s, h, w); err != nil {
			return fmt.Errorf("rle counts: %w", err)
		}
	} else {
		// Uncompressed counts are kept as they are, like frUncompressedRLE.
		out.Size = [2]int{h, w}
		if err := json.Unmarshal(raw, &out.Counts); err != nil {
			return fmt.Errorf("rle counts: %w", err)
		}
		if err := checkSize(h, w); err != nil {
			return fmt.Errorf("rle: %w", err)
		}
		if err := out.Validate(); err != nil {
			return fmt.Errorf("rle: %w", err)
		}
	}
	*r = out
	return nil
}

// Segmentation is an annotation's mask as COCO stores it: either polygons
// (a list of [x0, y0, x1, y1, ...] in pixels, the object being their union)
// or an RLE. Exactly one of the two is set.
type Segmentation struct {
	Polygons [][]float64
	RLE      *RLE
}

// MarshalJSON writes the polygons as a list of lists, or the RLE object.
func (s Segmentation) MarshalJSON() ([]byte, error) {
	if s.RLE != nil {
		return json.Marshal(s.RLE)
	}
	if s.Polygons == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(s.Polygons)
}

// UnmarshalJSON reads a list of polygons or an RLE object.
func (s *Segmentation) UnmarshalJSON(data []byte) error {
	raw := bytes.TrimSpace(data)
	if len(raw) == 0 {
		return errors.New("segmentation: empty")
	}
	switch raw[0] {
	case '{':
		var r RLE
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("segmentation: %w", err)
		}
		*s = Segmentation{RLE: &r}
	case '[':
		var p [][]float64
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("segmentation: want a list of polygons [[x0,y0,x1,y1,...],...]: %w", err)
		}
		*s = Segmentation{Polygons: p}
	default:
		return fmt.Errorf("segmentation: want a list of polygons or an RLE object, got %.20s", raw)
	}
	return nil
}

// ToRLE returns the mask of an image of h x w pixels, as COCO.annToRLE does:
// polygons are rasterised one by one (FromPolygon) and united; an RLE is
// returned as it is, with its own size.
//
// pycocotools reads a polygon list whose first polygon has exactly four
// numbers as boxes and then fails on the list's type; such a polygon is
// rasterised here as the two-point polygon it says it is.
func (s *Segmentation) ToRLE(h, w int) (RLE, error) {
	if s == nil {
		return RLE{}, errors.New("segmentation: none")
	}
	if s.RLE != nil {
		return *s.RLE, nil
	}
	if len(s.Polygons) == 0 {
		return RLE{}, errors.New("segmentation: no polygons and no RLE")
	}
	return FromPolygons(s.Polygons, h, w)
}

// Image is an entry of a COCO dataset's "images" list.
type Image struct {
	ID       int64  `json:"id"`
	Width    int    `json:"width"`
	Height   int    `json:"height"`
	FileName string `json:"file_name,omitempty"`
}

// Category is an entry of a COCO dataset's "categories" list.
type Category struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	Supercategory string `json:"supercategory,omitempty"`
}

// Annotation is a ground-truth object. Area is the annotation's own "area"
// field, which COCOeval uses for the small/medium/large ranges (for COCO it
// is the mask's area, not the box's). BBox is [x, y, w, h].
type Annotation struct {
	ID           int64         `json:"id"`
	ImageID      int64         `json:"image_id"`
	CategoryID   int64         `json:"category_id"`
	BBox         []float64     `json:"bbox"`
	Area         float64       `json:"area"`
	IsCrowd      int           `json:"iscrowd"`
	Segmentation *Segmentation `json:"segmentation,omitempty"`
}

// Dataset is the part of a COCO instances file that evaluation reads.
type Dataset struct {
	Images      []Image      `json:"images"`
	Annotations []Annotation `json:"annotations"`
	Categories  []Category   `json:"categories"`
}

// Detection is one entry of a COCO results file: a scored box and/or mask
// for an image and category. BBox is [x, y, w, h]; it may be empty when
// Segmentation is set, and is then the mask's box.
type Detection struct {
	ImageID      int64         `json:"image_id"`
	CategoryID   int64         `json:"category_id"`
	BBox         []float64     `json:"bbox,omitempty"`
	Score        float64       `json:"score"`
	Segmentation *Segmentation `json:"segmentation,omitempty"`
}

// ParseDataset reads a COCO instances JSON document.
func ParseDataset(data []byte) (*Dataset, error) {
	var d struct {
		Images      *[]Image      `json:"images"`
		Annotations *[]Annotation `json:"annotations"`
		Categories  *[]Category   `json:"categories"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	if d.Images == nil || d.Annotations == nil || d.Categories == nil {
		return nil, errors.New(`not a COCO instances file: want "images", "annotations" and "categories" lists`)
	}
	return &Dataset{Images: *d.Images, Annotations: *d.Annotations, Categories: *d.Categories}, nil
}

// LoadDataset reads a COCO instances JSON file.
func LoadDataset(path string) (*Dataset, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load ground truth: %w", err)
	}
	d, err := ParseDataset(data)
	if err != nil {
		return nil, fmt.Errorf("load ground truth %s: %w", path, err)
	}
	return d, nil
}

// ParseResults reads a COCO results JSON document (a list of detections).
func ParseResults(data []byte) ([]Detection, error) {
	var r []Detection
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return r, nil
}

// LoadResults reads a COCO results JSON file.
func LoadResults(path string) ([]Detection, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load results: %w", err)
	}
	r, err := ParseResults(data)
	if err != nil {
		return nil, fmt.Errorf("load results %s: %w", path, err)
	}
	return r, nil
}
